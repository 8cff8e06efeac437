"""The new families' own positional facts: identity patches, partial rotary widths, extend_context
against transformers' own scalings, OPT/RoBERTa table offsets, Gemma3's two rotary settings."""
from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, StaticCache

import hf_posenc
from conftest import MAX_POS, max_diff, tokens
from test_beyond_seed import make_any, patch_any

ROTARY = ["gpt_neox", "phi", "qwen3", "gemma", "gemma3"]
LONG = MAX_POS * 2 + 20



def _copy_weights(src, dst):
    dst.load_state_dict({k: v for k, v in src.state_dict().items() if "hf_posenc" not in k})


@pytest.mark.parametrize("family,encoding", [(f, "rope") for f in ROTARY] + [("opt", "learned"),
                                                                              ("roberta", "learned")])
def test_identity_patches_leave_logits_unchanged(family, encoding):
    model = make_any(family)
    ids = tokens(2, 20)
    ids[1, :5] = model.config.pad_token_id  # RoBERTa's own position ids skip pad tokens
    mask = (ids != model.config.pad_token_id).long()
    with torch.no_grad():
        before, before_masked = model(ids).logits, model(ids, attention_mask=mask).logits
        hf_posenc.apply_posenc(model, encoding)
        after, after_masked = model(ids).logits, model(ids, attention_mask=mask).logits
    assert torch.equal(before, after)
    # OPT gives pads position -1 (row 1), we give them 0: only the pads' own rows may differ
    assert torch.equal(before_masked[mask.bool()], after_masked[mask.bool()])


@pytest.mark.parametrize("family", ["gpt_neox", "phi"])
def test_partial_rotary_width_is_kept_with_a_new_theta(family):
    """rope theta=500 equals the native model built with theta 500 (same partial rotary)."""
    patched = hf_posenc.apply_posenc(make_any(family), "rope", theta=500.0)
    spec = hf_posenc.get_posenc(patched).encoding.spec
    assert spec.rotary_dim == int(spec.head_dim * spec.partial_rotary_factor) < spec.head_dim
    params = {**patched.config.rope_parameters, "rope_theta": 500.0}
    native = make_any(family, rope_parameters=params)
    _copy_weights(patched, native)
    ids = tokens(2, 30)
    with torch.no_grad():
        assert max_diff(patched(ids).logits, native(ids).logits) < 1e-6


def test_rope_cannot_rotate_more_than_the_family_does():
    with pytest.raises(ValueError, match="rotates only the first 4 of 16 dims"):
        hf_posenc.apply_posenc(make_any("gpt_neox"), "rope", partial_rotary_factor=1.0)


@pytest.mark.parametrize("method,hf_params", [
    ("linear", {"rope_type": "linear", "factor": 4.0}),
    ("yarn", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": MAX_POS}),
    ("ntk", {"rope_type": "default"}),
])
@pytest.mark.parametrize("family", ["gpt_neox", "phi", "qwen3", "gemma"])
def test_extend_context_equals_transformers_own_scaling(family, method, hf_params, record):
    ours = make_any(family)
    hf_posenc.extend_context(ours, method, factor=4.0)
    spec = hf_posenc.get_posenc(ours).encoding.spec
    params = {**ours.config.rope_parameters, **hf_params}
    if method == "ntk":  # NTK-aware: theta * factor^(d / (d - 2)) over the rotated dims
        params["rope_theta"] = 10000.0 * 4.0 ** (spec.rotary_dim / (spec.rotary_dim - 2))
    theirs = make_any(family, rope_parameters=params, max_position_embeddings=MAX_POS * 4)
    _copy_weights(ours, theirs)
    ids = tokens(2, LONG)
    with torch.no_grad():
        diff = max_diff(ours(ids).logits, theirs(ids).logits)
    record(f"hf_equivalence/{family}/{method}", diff)
    assert diff < 1e-6


@pytest.mark.parametrize("method,params", [("dynamic", {"granularity": 16}), ("self_extend", {"window": 16})])
@pytest.mark.parametrize("family", ["gpt_neox", "phi"])
def test_attention_time_extensions_with_partial_rotary_are_cache_exact(family, method, params, record):
    model = make_any(family)
    hf_posenc.extend_context(model, method, factor=4.0, **params)
    ids = tokens(1, LONG)
    with torch.no_grad():
        full = model(ids).logits
        for kind in ("dynamic", "static"):
            cache = DynamicCache(config=model.config) if kind == "dynamic" else \
                StaticCache(config=model.config, max_cache_len=LONG + 4)
            steps = [model(ids[:, :40], cache=cache, use_cache=True).logits]
            for t in range(40, LONG):
                steps.append(model(ids[:, t:t + 1], cache=cache, use_cache=True).logits)
            diff = max_diff(torch.cat(steps, 1), full)
            record(f"extension_cache/{kind}/{family}/{method}", diff)
            assert diff < 2e-5


def test_gemma3_keeps_both_rotary_settings_and_refuses_merging_them():
    model = make_any("gemma3")
    assert model.config.rope_parameters["sliding_attention"]["rope_theta"] != \
        model.config.rope_parameters["full_attention"]["rope_theta"]
    hf_posenc.apply_posenc(model, "rope")
    assert hf_posenc.get_posenc(model).encoding.matches_native()
    with pytest.raises(ValueError, match="separate rotary settings per layer type"):
        hf_posenc.extend_context(model, "yarn", factor=2.0)
    hf_posenc.extend_context(model, "extrapolate", factor=2.0)  # raising the limit is fine


def test_gemma3_rope_with_one_theta_equals_native_with_that_theta_everywhere():
    patched = hf_posenc.apply_posenc(make_any("gemma3"), "rope", theta=500.0)
    one = {"rope_type": "default", "rope_theta": 500.0}
    native = make_any("gemma3", rope_parameters={"sliding_attention": dict(one), "full_attention": dict(one)})
    _copy_weights(patched, native)
    ids = tokens(2, 30)
    with torch.no_grad():
        assert max_diff(patched(ids).logits, native(ids).logits) < 1e-6


@pytest.mark.parametrize("family", ["opt", "roberta"])
def test_learned_tables_grow_past_their_offset_rows(family):
    model = make_any(family)
    ctrl_free_before = {k: v.clone() for k, v in model.state_dict().items() if "position" in k and "weight" in k}
    (name, table), = ctrl_free_before.items()
    hf_posenc.extend_context(model, "interpolate", factor=2.0)
    grown = dict(model.named_parameters())[name]
    offset = table.shape[0] - MAX_POS
    assert grown.shape[0] == offset + 2 * MAX_POS
    assert torch.equal(grown[:offset], table[:offset])  # OPT's two / RoBERTa's padding_idx + 1 rows
    assert torch.equal(grown[offset], table[offset]) and torch.equal(grown[-1], table[-1])
    with torch.no_grad():
        out = model(tokens(1, 2 * MAX_POS)).logits
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("family", ["opt", "roberta"])
def test_learned_table_limit_is_counted_without_the_offset(family):
    model = hf_posenc.apply_posenc(make_any(family), "learned")
    with torch.no_grad():
        model(tokens(1, MAX_POS))  # exactly the table's usable positions
    with pytest.raises(ValueError, match="extend_context"):
        model(tokens(1, MAX_POS + 1), attention_mask=torch.ones(1, MAX_POS + 1, dtype=torch.long))


@pytest.mark.parametrize("family", ["opt", "roberta"])
@pytest.mark.parametrize("encoding", ["sinusoidal", "alibi", "fire"])
def test_tables_replaced_on_offset_families_accept_long_inputs(family, encoding):
    model = patch_any(make_any(family), encoding)
    with torch.no_grad():
        out = model(tokens(2, 3 * MAX_POS)).logits
    assert torch.isfinite(out).all()


def test_gemma3_sliding_window_is_exercised():
    """The suite's gemma3 has a local layer with window 8 < the test lengths: check it matters."""
    a, b = make_any("gemma3"), make_any("gemma3", sliding_window=64)
    b.load_state_dict(a.state_dict())
    ids = tokens(1, 24)
    with torch.no_grad():
        assert max_diff(a(ids).logits[:, :8], b(ids).logits[:, :8]) < 1e-6
        assert max_diff(a(ids).logits[:, 12:], b(ids).logits[:, 12:]) > 1e-4


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_xpos_query_chunks_equal_one_pass(attn, record):
    """Long prefills rotate per query chunk (bounded factors); the result is the one-pass result."""
    one = patch_any(make_any("llama", attn), "xpos")
    chunked = patch_any(make_any("llama", attn), "xpos", chunk_size=5)
    ids = tokens(2, 23)
    mask = torch.ones_like(ids)
    mask[1, :6] = 0
    with torch.no_grad():
        diff = max(max_diff(one(ids).logits, chunked(ids).logits),
                   max_diff(one(ids, attention_mask=mask).logits[mask.bool()],
                            chunked(ids, attention_mask=mask).logits[mask.bool()]))
    record(f"xpos_chunks/llama/{attn}", diff)
    assert diff < 2e-5


@pytest.mark.parametrize("family,expected", [("llama", 16 ** -0.5), ("gemma3", 24 ** -0.5), ("opt", 1.0),
                                             ("bert", 16 ** -0.5)])
def test_content_biases_get_the_scaling_attention_applies(family, expected):
    """Position terms are added after q.k is scaled: xl/cope scale them with the same factor
    (Gemma3: query_pre_attn_scalar ** -0.5; OPT scales q itself and passes 1.0)."""
    model = patch_any(make_any(family), "xl")
    enc, seen = hf_posenc.get_posenc(model).encoding, []
    inner = enc.bias
    enc.bias = lambda *a, **kw: seen.append(kw["scaling"]) or inner(*a, **kw)
    with torch.no_grad():
        model(tokens(1, 5))
    assert seen and all(s == pytest.approx(expected) for s in seen)
