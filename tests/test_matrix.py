"""Every family x encoding x attention implementation: cache, padding, generate, remove.

The README's support table is backed by this file: each cell (encoding, family) runs the
checks below under both sdpa and eager attention.
"""
from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, StaticCache

import hf_posenc
from conftest import DECODERS, ENCODINGS, FAMILIES, make_model, max_diff, patch, tokens

ATOL = 2e-5


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("family", DECODERS)
@pytest.mark.parametrize("cache_kind", ["dynamic", "static"])
def test_cache_decoding_equals_full_forward(family, encoding, attn, cache_kind, record):
    model = patch(make_model(family, attn), encoding)
    ids = tokens(2, 24)
    with torch.no_grad():
        full = model(ids).logits
        if cache_kind == "dynamic":
            cache = DynamicCache(config=model.config)
        else:
            cache = StaticCache(config=model.config, max_cache_len=32)
        steps = [model(ids[:, :10], cache=cache, use_cache=True).logits]
        for t in range(10, 24):
            steps.append(model(ids[:, t:t + 1], cache=cache, use_cache=True).logits)
    diff = max_diff(torch.cat(steps, dim=1), full)
    record(f"cache/{cache_kind}/{family}/{encoding}/{attn}", diff)
    assert diff < ATOL


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("family", FAMILIES)
def test_left_padding_matches_single_sequences(family, encoding, attn, record):
    model = patch(make_model(family, attn), encoding)
    long, short = tokens(1, 16, seed=2), tokens(1, 9, seed=3)
    pad = torch.zeros(1, 7, dtype=torch.long)
    batch = torch.cat([long, torch.cat([pad, short], dim=1)])
    mask = torch.ones_like(batch)
    mask[1, :7] = 0
    with torch.no_grad():
        both = model(batch, attention_mask=mask).logits
        alone_long = model(long).logits
        alone_short = model(short).logits
    diff = max(max_diff(both[0], alone_long[0]), max_diff(both[1, 7:], alone_short[0]))
    record(f"padding/{family}/{encoding}/{attn}", diff)
    assert diff < ATOL


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("family", DECODERS)
def test_greedy_generate_matches_full_forward_argmax(family, encoding, attn):
    model = patch(make_model(family, attn), encoding)
    prompt = tokens(1, 8)
    with torch.no_grad():
        out = model.generate(prompt, max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)
        seq = prompt
        for _ in range(10):
            nxt = model(seq).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(out, seq)


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("family", DECODERS)
def test_left_padded_batch_generate_matches_single(family, encoding):
    model = patch(make_model(family), encoding)
    a, b = tokens(1, 10, seed=4), tokens(1, 6, seed=5)
    batch = torch.cat([a, torch.cat([torch.zeros(1, 4, dtype=torch.long), b], 1)])
    mask = torch.ones_like(batch)
    mask[1, :4] = 0
    kw = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        both = model.generate(batch, attention_mask=mask, **kw)
        alone = model.generate(b, **kw)
    assert torch.equal(both[1, 4:], alone[0])


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("family", FAMILIES)
def test_remove_restores_exactly(family, encoding, attn):
    model = make_model(family, attn)
    ids = tokens(2, 12)
    with torch.no_grad():
        before = model(ids).logits
        names_before = dict(model.named_modules())
    patch(model, encoding)
    with torch.no_grad():
        model(tokens(2, 40))  # exercise length-dependent state (BERT buffers) before removal
    hf_posenc.remove_posenc(model)
    with torch.no_grad():
        after = model(ids).logits
    assert torch.equal(before, after)
    assert model.config._attn_implementation == attn
    assert not hasattr(model.config, "posenc")
    assert "set_attn_implementation" not in model.__dict__
    assert {n: type(m) for n, m in model.named_modules()} == {n: type(m) for n, m in names_before.items()}
    assert all(a is b for a, b in zip(model.modules(), names_before.values()))


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("family", FAMILIES)
def test_sdpa_and_eager_agree(family, encoding, record):
    sdpa = patch(make_model(family, "sdpa"), encoding)
    eager = patch(make_model(family, "eager"), encoding)
    eager.load_state_dict(sdpa.state_dict())
    ids = tokens(2, 20)
    with torch.no_grad():
        diff = max_diff(sdpa(ids).logits, eager(ids).logits)
    record(f"sdpa_vs_eager/{family}/{encoding}", diff)
    assert diff < ATOL


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_remove_restores_exactly_in_bf16(family, encoding, tmp_path):
    """Restored modules keep their buffers' dtype (rotary inv_freq stays fp32 in a bf16 model)."""
    make_model(family).save_pretrained(tmp_path)
    model = type(make_model(family)).from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    ids = tokens(2, 12)
    with torch.no_grad():
        before = model(ids).logits
    patch(model, encoding)
    hf_posenc.remove_posenc(model)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, before)


def test_remove_after_casting_a_patched_model_casts_restored_parameters():
    model = patch(make_model("gpt2"), "alibi").to(torch.bfloat16)
    hf_posenc.remove_posenc(model)
    assert model.transformer.wpe.weight.dtype == torch.bfloat16
