"""The new encodings against direct, slow implementations of their papers' definitions (tiny tensors,
float64 loops), plus the properties each paper claims (relative, bounded, ALiBi-like start...)."""
from __future__ import annotations

import math

import pytest
import torch

from hf_posenc.encodings.alibi import ALiBi
from hf_posenc.encodings.base import ModelSpec
from hf_posenc.encodings.cope import CoPE
from hf_posenc.encodings.fire import Fire
from hf_posenc.encodings.kerple import Kerple
from hf_posenc.encodings.xl import TransformerXL
from hf_posenc.encodings.xpos import XPos


def spec(causal=True, heads=2, kv=2, head_dim=4, hidden=8, layers=2, max_positions=64):
    return ModelSpec(model_type="test", hidden_size=hidden, num_heads=heads, num_kv_heads=kv, head_dim=head_dim,
                     num_layers=layers, causal=causal, native="absolute", max_positions=max_positions)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- Transformer-XL
@pytest.mark.parametrize("causal", [True, False])
def test_xl_terms_b_c_d_of_the_paper(causal):
    s = spec(causal=causal, heads=2, kv=1, head_dim=4, hidden=6)
    enc = TransformerXL(s, init_std=0.5, shared_uv=False)
    q, k = randn(1, 2, 3, 4, seed=1), randn(1, 1, 5, 4, seed=2)
    q_pos, k_pos = torch.arange(2, 5), torch.arange(5)
    scaling = 0.37
    got = enc.bias(q_pos, k_pos, 1, query=q, key=k, scaling=scaling)
    W, u, v = enc.w_r[1].weight.double(), enc.u[1].double(), enc.v[1].double()
    for h in range(2):
        for a, i in enumerate(q_pos.tolist()):
            for j in range(5):
                d = i - j
                if causal and d < 0:
                    continue  # masked
                # R_d = [sin(d / 10000^(2k/6)) for k] ++ [cos(...)], rel_dim = hidden = 6
                freqs = [10000 ** (-2 * t / 6) for t in range(3)]
                R = torch.tensor([math.sin(d * f) for f in freqs] + [math.cos(d * f) for f in freqs],
                                 dtype=torch.float64)
                r = (W @ R).view(2, 4)[h]
                want = scaling * (q[0, h, a].double() @ r + u[h] @ k[0, 0, j].double() + v[h] @ r)
                assert got[0, h, a, j].item() == pytest.approx(want.item(), abs=1e-5)


def test_xl_starts_as_nope():
    enc = TransformerXL(spec())
    out = enc.bias(torch.arange(3), torch.arange(3), 0, query=randn(1, 2, 3, 4), key=randn(1, 2, 3, 4), scaling=1.0)
    assert torch.count_nonzero(out) == 0


# ----------------------------------------------------------------------------- xPos
def _xpos_naive(q, k, n, m, d, gamma, sb, theta=10000.0):
    """q_n^T k_m of the paper in float64 with absolute scales zeta^(n/sb), zeta^(-m/sb)."""
    half = d // 2
    zeta = [(t / half + gamma) / (1 + gamma) for t in range(half)]
    inv = [theta ** (-2 * t / d) for t in range(half)]

    def transform(x, pos, sign):
        out = [0.0] * d
        for t in range(half):  # half-split pairs (t, t + d/2), rotated by pos * inv_t
            c, s = math.cos(pos * inv[t]), math.sin(pos * inv[t])
            scale = zeta[t] ** (sign * pos / sb)
            out[t] = (x[t] * c - x[t + half] * s) * scale
            out[t + half] = (x[t + half] * c + x[t] * s) * scale
        return out

    tq, tk = transform(q, n, 1), transform(k, m, -1)
    return sum(a * b for a, b in zip(tq, tk))


def test_xpos_scores_equal_the_paper():
    enc = XPos(spec(head_dim=8), gamma=0.4, scale_base=8.0)
    q, k = randn(1, 1, 4, 8, seed=3), randn(1, 1, 6, 8, seed=4)
    q_pos, k_pos = torch.arange(2, 6), torch.arange(6)
    rq, rk = enc.rotate(q, k, q_pos, k_pos)
    scores = rq[0, 0] @ rk[0, 0].t()
    for a, n in enumerate(q_pos.tolist()):
        for m in range(n + 1):
            want = _xpos_naive(q[0, 0, a].double().tolist(), k[0, 0, m].double().tolist(), n, m, 8, 0.4, 8.0)
            assert scores[a, m].item() == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_xpos_is_bounded_and_exact_at_long_positions():
    enc = XPos(spec(head_dim=8), scale_base=512.0)
    start = 10 ** 6  # zeta_0^(n/512) alone would overflow fp32 here
    q, k = randn(1, 1, 3, 8, seed=5), randn(1, 1, 40, 8, seed=6)
    q_pos, k_pos = torch.arange(start + 37, start + 40), torch.arange(start, start + 40)
    rq, rk = enc.rotate(q, k, q_pos, k_pos)
    assert torch.isfinite(rq).all() and torch.isfinite(rk).all()
    # rotation keeps norms; key factors are <= 1, query factors >= 1 only within the chunk (2 positions)
    assert torch.all(rq.norm(dim=-1) <= q.norm(dim=-1) * 1.01)
    assert torch.all(rk.norm(dim=-1) <= k.norm(dim=-1) * (1 + 1e-5))
    scores = rq[0, 0] @ rk[0, 0].t()
    # relative: the same as near position 0 (angles in fp32 at 1e6 lose ~1e-3 rad)
    rq0, rk0 = enc.rotate(q, k, q_pos - start, k_pos - start)
    assert torch.allclose(scores, rq0[0, 0] @ rk0[0, 0].t(), atol=2e-2)


def test_xpos_decays_with_distance():
    enc = XPos(spec(head_dim=8), scale_base=4.0, theta=1e9)
    q = torch.zeros(1, 1, 1, 8)
    q[..., [3, 7]] = 1.0  # only the slowest pair (angle ~1e-7 per position): pure decay zeta_3^((n-m)/sb)
    rq, rk = enc.rotate(q, q.expand(1, 1, 30, 8), torch.tensor([29]), torch.arange(30))
    scores = (rq[0, 0] @ rk[0, 0].t())[0]
    assert torch.all(scores[1:] > scores[:-1])


# ----------------------------------------------------------------------------- KERPLE
@pytest.mark.parametrize("variant", ["log", "power"])
def test_kerple_kernels(variant):
    enc = Kerple(spec(heads=3), variant=variant, shared=False)
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(randn(*p.shape, seed=8) * 0.5)
    out = enc.bias(torch.arange(4, 8), torch.arange(8), 1)[0]
    r1, r2 = enc.coefficients(1)
    assert torch.all(r1 > 0) and torch.all(r2 > 0) and (variant == "log" or torch.all(r2 <= 2))
    for h in range(3):
        for a, i in enumerate(range(4, 8)):
            for j in range(8):
                d = abs(i - j)
                want = -r1[h].item() * (math.log(1 + r2[h].item() * d) if variant == "log" else d ** r2[h].item())
                assert out[h, a, j].item() == pytest.approx(want, abs=1e-5)


def test_kerple_power_starts_as_alibi_and_log_near_it():
    s = spec(heads=4)
    q_pos, k_pos = torch.arange(20), torch.arange(20)
    alibi = ALiBi(s).bias(q_pos, k_pos, 0)
    assert torch.allclose(Kerple(s, variant="power").bias(q_pos, k_pos, 0), alibi, atol=1e-6)
    log = Kerple(s).bias(q_pos, k_pos, 0)
    assert torch.allclose(log[..., 1, 0], alibi[..., 1, 0], rtol=0.15)  # -log(1 + m) ~ -m
    assert torch.all(log >= alibi - 1e-6)  # log grows slower than linear


def test_kerple_power_has_finite_gradients_at_distance_zero():
    enc = Kerple(spec(), variant="power")
    enc.bias(torch.arange(5), torch.arange(5), 0).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in enc.parameters())


# ----------------------------------------------------------------------------- FIRE
def _fire_naive(mlp, i, j, c, L):
    psi = lambda x: math.log(c * x + 1)  # noqa: E731
    x = psi(i - j) / psi(max(L, i))
    h = torch.relu(mlp.fc1.weight[:, 0].double() * x + mlp.fc1.bias.double())
    return mlp.fc2.weight.double() @ h + mlp.fc2.bias.double()


@pytest.mark.parametrize("causal", [True, False])
def test_fire_formula(causal):
    enc = Fire(spec(causal=causal, heads=2), init_std=0.5, threshold=5.0, hidden=6)
    mlp = enc.mlps[0]
    with torch.no_grad():
        mlp.raw_c.fill_(0.3)
    c = torch.nn.functional.softplus(torch.tensor(0.3)).item()
    q_pos, k_pos = torch.arange(3, 12), torch.arange(12)
    positions = torch.stack([q_pos, q_pos - 2])  # row 1: the same keys, two pads earlier
    out = enc.bias(q_pos, k_pos, 0, positions=positions)
    for b in range(2):
        for a in range(len(q_pos)):
            i, true_i = q_pos[a].item(), positions[b, a].item()
            for j in range(12):
                if causal and j > i:
                    continue
                if causal:
                    want = _fire_naive(mlp, true_i, true_i - (i - j), c, 5.0)
                    assert out[b, :, a, j].tolist() == pytest.approx(want.tolist(), abs=1e-5)
                else:
                    both = _fire_naive(mlp, true_i, true_i - abs(i - j), c, 5.0)
                    half = both[:2] if i >= j else both[2:]
                    assert out[b, :, a, j].tolist() == pytest.approx(half.tolist(), abs=1e-5)


def test_fire_progressive_interpolation():
    """Past the threshold a query's distances are normalised by its own position: the bias of the
    farthest key (j = 0) is the same for every query i >= L."""
    enc = Fire(spec(), init_std=0.5, threshold=4.0)
    q_pos = torch.arange(4, 40)
    out = enc.bias(q_pos, torch.arange(40), 0)
    far = out[0, :, torch.arange(len(q_pos)), 0]  # [H, Q]: key 0 for every query
    assert torch.allclose(far, far[:, :1].expand_as(far), atol=1e-5)
    assert not torch.allclose(out[0, :, 0, 4], out[0, :, 0, 2])


def test_fire_starts_as_nope():
    out = Fire(spec()).bias(torch.arange(6), torch.arange(6), 0)
    assert torch.count_nonzero(out) == 0


# ----------------------------------------------------------------------------- CoPE
def test_cope_formula():
    s = spec(heads=2, kv=1, head_dim=4)
    enc = CoPE(s, npos_max=4, init_std=0.7)
    q, k = randn(1, 2, 5, 4, seed=9) * 2, randn(1, 1, 7, 4, seed=10) * 2
    q_pos, k_pos = torch.arange(2, 7), torch.arange(7)
    scaling = 0.5
    got = enc.bias(q_pos, k_pos, 1, query=q, key=k, scaling=scaling)
    e = enc.embeddings[1].double()
    capped = 0
    for h in range(2):
        for a, i in enumerate(q_pos.tolist()):
            qi = q[0, h, a].double()
            for j in range(i + 1):
                p = sum(torch.sigmoid(scaling * qi @ k[0, 0, t].double()).item() for t in range(j, i + 1))
                if p > 3:
                    p, capped = 3.0, capped + 1
                lo, hi = math.floor(p), math.ceil(p)
                z = (qi @ e[lo]) * (1 - (p - lo)) + (qi @ e[hi]) * (p - lo)
                assert got[0, h, a, j].item() == pytest.approx(scaling * z.item(), abs=1e-5)
    assert capped > 0  # the cap was exercised


def test_cope_starts_as_nope_and_ignores_later_keys():
    enc = CoPE(spec())
    q, k = randn(1, 2, 3, 4), randn(1, 2, 8, 4)
    assert torch.count_nonzero(enc.bias(torch.arange(3), torch.arange(8), 0, query=q, key=k, scaling=1.0)) == 0
    enc = CoPE(spec(), init_std=1.0)
    a = enc.bias(torch.arange(3), torch.arange(3), 0, query=q, key=k[:, :, :3], scaling=1.0)
    b = enc.bias(torch.arange(3), torch.arange(8), 0, query=q, key=k, scaling=1.0)  # + empty static slots
    assert torch.allclose(a, b[..., :3], atol=1e-6)
