"""The fused / bias / chunked attention paths of score-bias encodings agree, and each is used."""
from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

import hf_posenc
from conftest import make_model, patch, tokens


def logits_with_path(family, encoding, path, attn="sdpa", dtype=torch.float32, chunk_size=None, n=40, mask=None):
    model = patch(make_model(family, attn), encoding).to(dtype)
    ctrl = hf_posenc.get_posenc(model)
    ctrl.attention_path, ctrl.chunk_size = path, chunk_size
    ids = tokens(2, n)
    with torch.no_grad():
        return model(ids, attention_mask=mask).logits.float()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_fused_alibi_equals_materialised_bias(family, attn):
    fused = logits_with_path(family, "alibi", "fused", attn)
    bias = logits_with_path(family, "alibi", "bias", attn)
    chunked = logits_with_path(family, "alibi", "chunked", attn, chunk_size=7)
    assert (fused - bias).abs().max() < 2e-5 and (chunked - bias).abs().max() < 2e-5


def test_fused_alibi_with_padding_mask():
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[1, :9] = 0
    fused = logits_with_path("llama", "alibi", "fused", mask=mask)
    bias = logits_with_path("llama", "alibi", "bias", mask=mask)
    assert (fused - bias)[:, 9:].abs().max() < 2e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_fused_alibi_half_precision_is_as_accurate_as_the_bias_path(dtype):
    ref = logits_with_path("llama", "alibi", "bias", n=300)
    fused = logits_with_path("llama", "alibi", "fused", dtype=dtype, n=300)
    bias = logits_with_path("llama", "alibi", "bias", dtype=dtype, n=300)
    err_fused, err_bias = (fused - ref).abs().max(), (bias - ref).abs().max()
    assert err_fused <= 2 * err_bias + 1e-3, (err_fused, err_bias)


@pytest.mark.parametrize("encoding", ["t5", "t5:unshared", "alibi", "kerple", "fire", "xl"])
@pytest.mark.parametrize("family", ["bert", "llama", "gpt2"])
def test_chunked_equals_bias(family, encoding):
    """Chunks copied from one distance vector (t5, alibi, kerple), built per chunk (fire, xl),
    causal chunks cut at their last key; with and without padding."""
    name, _, variant = encoding.partition(":")
    opts = {"shared": False} if variant == "unshared" else {}
    mask = torch.ones(2, 40, dtype=torch.long)
    mask[1, :7] = 0
    for m in (None, mask):
        outs = {}
        for path in ("bias", "chunked"):
            model = patch(make_model(family), name, **opts)
            ctrl = hf_posenc.get_posenc(model)
            ctrl.attention_path, ctrl.chunk_size = path, 6
            with torch.no_grad():
                outs[path] = model(tokens(2, 40), attention_mask=m).logits
        diff = (outs["chunked"] - outs["bias"])[:, 7:] if m is not None else outs["chunked"] - outs["bias"]
        assert diff.abs().max() < 2e-5, (m is not None, diff.abs().max())


@pytest.mark.parametrize("shared", [True, False])
def test_t5_plateau_path_equals_the_bias_path(shared, monkeypatch):
    """Beyond max_distance T5 biases are constant: far keys go through the fused kernel unbiased
    and are merged with the biased near band by log-sum-exp. Prefill, then a cached continuation."""
    import hf_posenc.attention as attention

    calls = []
    orig = attention._plateau_chunks
    monkeypatch.setattr(attention, "_plateau_chunks", lambda *a: calls.append(a[-2:]) or orig(*a))
    ids = tokens(2, 70)
    outs = {}
    for path in ("bias", "chunked"):
        model = patch(make_model("llama"), "t5", num_buckets=8, max_distance=12, shared=shared)
        ctrl = hf_posenc.get_posenc(model)
        ctrl.attention_path, ctrl.chunk_size = path, 8
        with torch.no_grad():
            cache = DynamicCache(config=model.config)
            first = model(ids[:, :45], cache=cache).logits
            outs[path] = torch.cat([first, model(ids[:, 45:], cache=cache).logits], dim=1)
    assert (outs["chunked"] - outs["bias"]).abs().max() < 2e-5
    assert calls and all(dist <= 12 for dist, _ in calls)


@pytest.mark.parametrize("encoding", ["t5", "alibi"])
def test_chunked_continuation_with_a_cache_equals_full_forward(encoding):
    """Chunked prefill of 20 new tokens after 30 cached ones: distances are offset by the cache."""
    model = patch(make_model("llama"), encoding)
    ctrl = hf_posenc.get_posenc(model)
    ctrl.attention_path, ctrl.chunk_size = "chunked", 6
    ids = tokens(1, 50)
    with torch.no_grad():
        full = model(ids).logits
        cache = DynamicCache(config=model.config)
        model(ids[:, :30], cache=cache)
        part = model(ids[:, 30:], cache=cache).logits
    assert (part - full[:, 30:]).abs().max() < 2e-5


def test_auto_chunks_above_the_threshold_and_fuses_causal_alibi(monkeypatch):
    import hf_posenc.attention as attention

    calls = []
    for name in ("_fused_alibi", "_chunked"):
        orig = getattr(attention, name)
        monkeypatch.setattr(attention, name, lambda *a, _o=orig, _n=name, **k: calls.append(_n) or _o(*a, **k))
    model = patch(make_model("llama"), "alibi")
    with torch.no_grad():
        model(tokens(1, 30))
    assert calls == ["_fused_alibi"] * 2
    calls.clear()
    t5 = patch(make_model("llama"), "t5")
    with torch.no_grad():
        t5(tokens(1, 30))  # short causal prefill, small bias: one bias tensor
        assert calls == []
        hf_posenc.get_posenc(t5).chunk_threshold = 4 * 10 * 10  # heads * Q * K
        t5(tokens(1, 30))  # bias over the threshold
        assert calls == ["_chunked"] * 2
        calls.clear()
        hf_posenc.get_posenc(t5).chunk_threshold = 1 << 26
        hf_posenc.get_posenc(t5).causal_chunk = 4
        t5(tokens(1, 30))  # causal prefill of more than 4 chunks
        assert calls == ["_chunked"] * 2
        calls.clear()
        bert = patch(make_model("bert"), "t5")
        hf_posenc.get_posenc(bert).causal_chunk = 4
        bert(tokens(1, 30))  # not causal: no chunks to skip
        assert calls == []


def test_fused_path_refused_where_it_does_not_apply():
    with pytest.raises(ValueError, match="fused path needs causal ALiBi"):
        logits_with_path("bert", "alibi", "fused")


def test_decode_steps_use_a_single_bias_row_and_match():
    model = patch(make_model("llama"), "alibi")
    ids = tokens(1, 30)
    seen = []
    import hf_posenc.attention as attention
    orig = attention.merge_bias
    attention.merge_bias = lambda *a: seen.append(tuple(a[1].shape)) or orig(*a)
    try:
        with torch.no_grad():
            full = model(ids).logits
            cache = DynamicCache(config=model.config)
            model(ids[:, :29], cache=cache, use_cache=True)
            last = model(ids[:, 29:], cache=cache, use_cache=True).logits
    finally:
        attention.merge_bias = orig
    assert seen == [(1, 4, 1, 30)]  # built once for both layers: one query row of 30 keys
    assert (last[:, -1] - full[:, -1]).abs().max() < 2e-5
