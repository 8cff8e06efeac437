"""Encodings against their papers' definitions, with values worked out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from hf_posenc.encodings.alibi import alibi_slopes
from hf_posenc.encodings.base import apply_rotary
from hf_posenc.encodings.rope import rope_cos_sin as _cos_sin, rope_inv_freq


def rope_cos_sin(positions, head_dim, theta, rotary_fraction, dtype):
    return _cos_sin(positions, rope_inv_freq(head_dim, theta, rotary_fraction), dtype)
from hf_posenc.encodings.sinusoidal import sinusoidal_table
from hf_posenc.encodings.t5 import t5_bucket


def test_sinusoidal_formula_values():
    # d = 4: PE(p, 0) = sin(p), PE(p, 1) = cos(p), PE(p, 2) = sin(p / 100), PE(p, 3) = cos(p / 100)
    pe = sinusoidal_table(torch.tensor([0, 1, 7, 1000]), 4)
    for row, p in zip(pe, [0, 1, 7, 1000]):
        expected = [math.sin(p), math.cos(p), math.sin(p / 100), math.cos(p / 100)]
        assert row.tolist() == pytest.approx(expected, abs=1e-5)
    # d = 6 at position 2: third frequency is 10000^(-4/6)
    pe = sinusoidal_table(torch.tensor([2]), 6)[0]
    assert pe[4].item() == pytest.approx(math.sin(2 * 10000 ** (-4 / 6)), abs=1e-6)
    assert pe[5].item() == pytest.approx(math.cos(2 * 10000 ** (-4 / 6)), abs=1e-6)


def test_alibi_slopes_8_heads():
    assert alibi_slopes(8) == pytest.approx([1 / 2 ** k for k in range(1, 9)])


def test_alibi_slopes_12_heads():
    # the 8 slopes of 8 heads, then every other slope of 16 heads: 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5
    expected = [1 / 2 ** k for k in range(1, 9)] + [2 ** -0.5, 2 ** -1.5, 2 ** -2.5, 2 ** -3.5]
    assert alibi_slopes(12) == pytest.approx(expected)


def test_alibi_slopes_9_heads():
    assert alibi_slopes(9) == pytest.approx([1 / 2 ** k for k in range(1, 9)] + [2 ** -0.5])


def test_alibi_slopes_16_and_4_heads():
    assert alibi_slopes(16) == pytest.approx([2 ** (-0.5 * k) for k in range(1, 17)])
    assert alibi_slopes(4) == pytest.approx([1 / 4, 1 / 16, 1 / 64, 1 / 256])


def test_t5_buckets_unidirectional():
    # 32 buckets, max_distance 128: distances 0..15 exact; 16 + floor(16 * log(n/16) / log(8)) after
    dist = torch.tensor([0, 1, 5, 15, 16, 20, 32, 64, 127, 128, 1000])
    got = t5_bucket(-dist, bidirectional=False, num_buckets=32, max_distance=128)
    # 20: 16*ln(1.25)/ln 8 = 1.72 -> 17; 32: 16/3 = 5.33 -> 21; 64: 32/3 = 10.67 -> 26; 127: 15.94 -> 31
    assert got.tolist() == [0, 1, 5, 15, 16, 17, 21, 26, 31, 31, 31]
    # future keys (positive relative position) all fall in bucket 0 for a causal model
    assert t5_bucket(torch.tensor([1, 50]), False, 32, 128).tolist() == [0, 0]


def test_t5_buckets_bidirectional():
    # 32 buckets -> 16 per direction, 8 exact; keys after the query are offset by 16
    rel = torch.tensor([0, -3, 3, -8, 8, -20, 20, -200, 200])
    got = t5_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128)
    # 20: 8 + floor(8 * ln(2.5) / ln(16)) = 8 + 2 = 10; 200 saturates at 15
    assert got.tolist() == [0, 3, 19, 8, 24, 10, 26, 15, 31]


def test_rope_angles_and_relative_property():
    cos, sin = rope_cos_sin(torch.tensor([3]), head_dim=8, theta=10000.0, rotary_fraction=1.0, dtype=torch.float32)
    inv = [10000 ** (-2 * k / 8) for k in range(4)]
    assert cos[0].tolist() == pytest.approx([math.cos(3 * f) for f in inv * 2], abs=1e-6)
    assert sin[0].tolist() == pytest.approx([math.sin(3 * f) for f in inv * 2], abs=1e-6)
    # <R(m) q, R(n) k> depends only on m - n
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)

    def score(m, n):
        cq, sq = rope_cos_sin(torch.tensor([m]), 8, 10000.0, 1.0, torch.float64)
        ck, sk = rope_cos_sin(torch.tensor([n]), 8, 10000.0, 1.0, torch.float64)
        return (apply_rotary(q.double(), cq, sq) * apply_rotary(k.double(), ck, sk)).sum().item()

    assert score(10, 3) == pytest.approx(score(1007, 1000), abs=1e-4)  # angles are fp32
    assert score(10, 3) != pytest.approx(score(10, 4), abs=1e-3)


def test_partial_rotary_leaves_tail_pairs_unrotated():
    cos, sin = rope_cos_sin(torch.arange(5), head_dim=8, theta=100.0, rotary_fraction=0.5, dtype=torch.float32)
    # pairs 0,1 rotate (columns 0,1 and 4,5); pairs 2,3 (columns 2,3 and 6,7) do not
    assert torch.all(cos[:, [2, 3, 6, 7]] == 1) and torch.all(sin[:, [2, 3, 6, 7]] == 0)
    assert not torch.all(sin[1:, [0, 1, 4, 5]] == 0)
