"""extend_context: every method on every family, against transformers where it has the method."""
from __future__ import annotations

import logging

import pytest
import torch
from transformers import DynamicCache, StaticCache

import hf_posenc
from conftest import DECODERS, MAX_POS, make_model, max_diff, patch, tokens
from hf_posenc.extension.tables import interpolate_table, tile_table

ROTARY_METHODS = {"linear": {}, "ntk": {}, "yarn": {}, "llama3": {}, "longrope": {"long_factor": [1.5] * 8},
                  "dynamic": {"granularity": 16}, "self_extend": {"window": 16}, "extrapolate": {}}
LONG = MAX_POS * 2 + 20  # well past the trained length (64)


def rotary_model(family: str, attn: str = "sdpa"):
    """A rotary model of the family: native for Llama-style, patched to `rope` for GPT-2."""
    model = make_model(family, attn)
    if family == "gpt2":
        hf_posenc.apply_posenc(model, "rope")
    return model


@pytest.mark.parametrize("method,hf_params", [
    ("linear", {"rope_type": "linear", "factor": 4.0}),
    ("yarn", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": MAX_POS}),
    ("llama3", {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": MAX_POS}),
    ("longrope", {"rope_type": "longrope", "factor": 4.0, "long_factor": [1.5] * 8, "short_factor": [1.0] * 8,
                  "original_max_position_embeddings": MAX_POS}),
    ("ntk", {"rope_type": "default", "rope_theta": 10000.0 * 4.0 ** (16 / 14)}),
])
@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2"])
def test_equals_the_model_transformers_builds_from_rope_parameters(family, method, hf_params, record):
    ours = make_model(family)
    hf_posenc.extend_context(ours, method, factor=4.0, **ROTARY_METHODS[method])
    hf_params = {"rope_theta": 10000.0, **hf_params}
    theirs = make_model(family, rope_parameters=hf_params, max_position_embeddings=MAX_POS * 4)
    theirs.load_state_dict({k: v for k, v in ours.state_dict().items() if "hf_posenc" not in k})
    ids = tokens(2, LONG)  # longrope: transformers uses the long factors past the trained length
    with torch.no_grad():
        diff = max_diff(ours(ids).logits, theirs(ids).logits)
    record(f"hf_equivalence/{family}/{method}", diff)
    assert diff == 0.0 or diff < 1e-6


@pytest.mark.parametrize("method", list(ROTARY_METHODS))
@pytest.mark.parametrize("family", DECODERS)
@pytest.mark.parametrize("cache_kind", ["dynamic", "static"])
def test_incremental_decoding_past_the_trained_length_equals_full_forward(family, method, cache_kind, record):
    model = rotary_model(family)
    hf_posenc.extend_context(model, method, factor=4.0, **ROTARY_METHODS[method])
    ids = tokens(1, LONG)
    with torch.no_grad():
        full = model(ids).logits
        cache = DynamicCache(config=model.config) if cache_kind == "dynamic" else \
            StaticCache(config=model.config, max_cache_len=LONG + 4)
        steps = [model(ids[:, :40], cache=cache, use_cache=True).logits]
        for t in range(40, LONG):
            steps.append(model(ids[:, t:t + 1], cache=cache, use_cache=True).logits)
    diff = max_diff(torch.cat(steps, 1), full)
    record(f"extension_cache/{cache_kind}/{family}/{method}", diff)
    assert diff < 2e-5


def test_transformers_dynamic_ntk_is_not_cache_consistent_but_ours_is():
    ids = tokens(1, LONG)

    def incremental_gap(model):
        with torch.no_grad():
            full = model(ids).logits
            cache = DynamicCache(config=model.config)
            steps = [model(ids[:, :40], cache=cache, use_cache=True).logits]
            for t in range(40, LONG):
                steps.append(model(ids[:, t:t + 1], cache=cache, use_cache=True).logits)
        return max_diff(torch.cat(steps, 1)[:, -1], full[:, -1])

    theirs = make_model("llama", rope_parameters={"rope_type": "dynamic", "factor": 4.0, "rope_theta": 10000.0})
    ours = hf_posenc.extend_context(make_model("llama"), "dynamic", factor=4.0)
    assert incremental_gap(theirs) > 1e-4  # float noise is ~1e-7
    assert incremental_gap(ours) < 2e-5


@pytest.mark.parametrize("method", ["dynamic", "self_extend"])
def test_attention_methods_are_plain_rope_within_their_exact_range(method):
    plain = make_model("llama")
    ext = hf_posenc.extend_context(make_model("llama"), method, factor=4.0, **ROTARY_METHODS[method])
    n = MAX_POS if method == "dynamic" else 16  # dynamic: the trained length; self_extend: the window
    ids = tokens(2, n)
    with torch.no_grad():
        assert max_diff(ext(ids).logits, plain(ids).logits) < 1e-5
        assert max_diff(ext(tokens(2, LONG)).logits, plain(tokens(2, LONG)).logits) > 1e-4


def test_self_extend_default_group_size_covers_max_length():
    model = hf_posenc.extend_context(make_model("llama"), "self_extend", max_length=1000, window=16)
    g = model.config.posenc["extension"]["params"]["group_size"]
    assert (MAX_POS - 16) * g + 16 >= 1000 and (MAX_POS - 16) * (g - 1) + 16 < 1000


def test_self_extend_matches_a_direct_implementation_of_the_paper():
    """Layer-0 attention probabilities (eager) against the formula of Jin et al."""
    model = hf_posenc.extend_context(make_model("llama", "eager"), "self_extend", factor=4.0, window=8,
                                     group_size=3)
    ids = tokens(1, 40)
    attn = model.model.layers[0].self_attn
    enc = hf_posenc.get_posenc(model).encoding
    with torch.no_grad():
        probs = model(ids, output_attentions=True).attentions[0]
        h = model.model.layers[0].input_layernorm(model.model.embed_tokens(ids))
        q = attn.q_proj(h).view(1, 40, -1, 16).transpose(1, 2)
        k = attn.k_proj(h).view(1, 40, -1, 16).transpose(1, 2).repeat_interleave(2, dim=1)
        i, j = torch.arange(40)[:, None], torch.arange(40)[None, :]
        inv = enc.inv_freq("cpu")

        def score(qpos, kpos):  # <R(qpos) q_i, R(kpos) k_j> for all i, j
            out = torch.zeros(1, 4, 40, 40)
            for a in range(40):
                for b in range(40):
                    cq, sq = enc.cos_sin(qpos[a, b][None], torch.float32)
                    ck, sk = enc.cos_sin(kpos[a, b][None], torch.float32)
                    from hf_posenc.encodings.base import apply_rotary
                    out[..., a, b] = (apply_rotary(q[..., a:a + 1, :], cq, sq) *
                                      apply_rotary(k[..., b:b + 1, :], ck, sk)).sum(-1)[..., 0]
            return out

        ii, jj = i.expand(40, 40), j.expand(40, 40)
        near = score(ii, jj)
        far = score(ii // 3 + 8 - 8 // 3, jj // 3)
        s = torch.where(i - j < 8, near, far) / 4.0
        s = s.masked_fill(j > i, float("-inf")).softmax(-1)
    assert max_diff(probs, s) < 1e-5
    del inv


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_self_extend_fused_path_equals_explicit_scores(family, monkeypatch):
    """SDPA on CPU merges two fused attentions by log-sum-exp; eager builds the scores. Small chunks
    so that queries span several chunks, rows with and without far keys, and left padding."""
    from hf_posenc.extension import attention_modes

    monkeypatch.setattr(attention_modes, "SELF_EXTEND_CHUNK", 8)
    eager = hf_posenc.extend_context(make_model(family, "eager"), "self_extend", factor=4.0, window=8, group_size=3)
    fused = hf_posenc.extend_context(make_model(family, "sdpa"), "self_extend", factor=4.0, window=8, group_size=3)
    calls = []
    monkeypatch.setattr(attention_modes.compat, "attention_with_lse",
                        lambda *a, _f=attention_modes.compat.attention_with_lse: calls.append(1) or _f(*a))
    ids = tokens(2, 60)
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    with torch.no_grad():
        assert max_diff(eager(ids).logits, fused(ids).logits) < 1e-5
        a, b = eager(ids, attention_mask=mask).logits, fused(ids, attention_mask=mask).logits
        assert max_diff(a[0, 5:], b[0, 5:]) < 1e-5 and max_diff(a[1], b[1]) < 1e-5
    assert calls  # the fused kernel really ran


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_dynamic_fused_prefill_equals_explicit_masks(family, monkeypatch):
    """A causal SDPA prefill past the trained length runs each later bucket as two fused attentions
    (earlier keys, own causal block) merged by log-sum-exp; eager builds every [Q, K] mask. Same
    logits, also for a prefill that continues a cache and with left padding (explicit path)."""
    from hf_posenc.extension import attention_modes

    def build(attn):
        return hf_posenc.extend_context(rotary_model(family, attn), "dynamic", factor=4.0, granularity=16)

    eager, fused = build("eager"), build("sdpa")
    calls = []
    monkeypatch.setattr(attention_modes.compat, "attention_with_lse",
                        lambda *a, _f=attention_modes.compat.attention_with_lse: calls.append(1) or _f(*a))
    ids = tokens(2, LONG)
    with torch.no_grad():
        assert max_diff(eager(ids).logits, fused(ids).logits) < 1e-5
        assert calls  # the fused kernel really ran
        cache = DynamicCache(config=fused.config)
        parts = [fused(ids[:, :50], cache=cache, use_cache=True).logits,
                 fused(ids[:, 50:], cache=cache, use_cache=True).logits]
        assert max_diff(torch.cat(parts, 1), eager(ids).logits) < 1e-5
        mask = torch.ones_like(ids)
        mask[0, :5] = 0
        a, b = eager(ids, attention_mask=mask).logits, fused(ids, attention_mask=mask).logits
        assert max_diff(a[0, 5:], b[0, 5:]) < 1e-5 and max_diff(a[1], b[1]) < 1e-5


@pytest.mark.parametrize("method", ["linear", "ntk", "yarn", "llama3", "longrope", "extrapolate"])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_static_methods_are_padding_invariant(family, method):
    model = rotary_model(family)
    hf_posenc.extend_context(model, method, factor=4.0, **ROTARY_METHODS[method])
    a, b = tokens(1, 90, seed=2), tokens(1, 70, seed=3)
    batch = torch.cat([a, torch.cat([torch.zeros(1, 20, dtype=torch.long), b], 1)])
    mask = torch.ones_like(batch)
    mask[1, :20] = 0
    with torch.no_grad():
        both = model(batch, attention_mask=mask).logits
        assert max_diff(both[1, 20:], model(b).logits[0]) < 2e-5


def test_rope_theta_and_config_fields_are_kept():
    model = make_model("llama")
    before = dict(model.config.rope_parameters)
    hf_posenc.extend_context(model, "yarn", max_length=256)
    assert model.config.rope_parameters == before
    ext = model.config.posenc["extension"]
    assert ext["method"] == "yarn" and ext["factor"] == 4.0 and ext["original_max_length"] == MAX_POS
    assert model.config.posenc["options"]["theta"] == 10000.0


@pytest.mark.parametrize("method", ["yarn", "dynamic", "self_extend", "linear"])
def test_extension_survives_save_and_load(method, tmp_path):
    model = hf_posenc.extend_context(make_model("llama"), method, factor=4.0, **ROTARY_METHODS[method])
    model.save_pretrained(tmp_path)
    loaded = hf_posenc.from_pretrained(tmp_path)
    ids = tokens(2, LONG)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert loaded.config.posenc["extension"]["method"] == method


# ----------------------------------------------------------------------- learned tables
def test_interpolate_and_tile_maths():
    table = torch.arange(12, dtype=torch.float32).view(4, 3)  # rows 0..3
    new = interpolate_table(table, 7)  # positions 0, .5, 1, ..., 3
    assert torch.equal(new[0], table[0]) and torch.equal(new[-1], table[-1])
    assert torch.allclose(new[1], (table[0] + table[1]) / 2) and torch.equal(new[2], table[1])
    assert torch.equal(tile_table(table, 10)[[0, 4, 5, 9]], table[[0, 0, 1, 1]])


@pytest.mark.parametrize("method", ["interpolate", "tile"])
@pytest.mark.parametrize("family,encoding", [("gpt2", None), ("bert", None), ("llama", "learned")])
def test_learned_tables_grow_and_work_at_the_new_length(family, encoding, method, tmp_path):
    model = make_model(family)
    if encoding:
        patch(model, encoding)
    hf_posenc.extend_context(model, method, max_length=MAX_POS * 2)
    with torch.no_grad():
        out = model(tokens(1, MAX_POS * 2)).logits
        assert out.shape[1] == MAX_POS * 2 and torch.isfinite(out).all()
        with pytest.raises(ValueError, match="extend_context"):
            model(tokens(1, MAX_POS * 2 + 1))
    if family != "bert":
        gen = model.generate(tokens(1, MAX_POS + 10), max_new_tokens=20, do_sample=False, eos_token_id=None,
                             pad_token_id=0)
        assert gen.shape[1] == MAX_POS + 30
    model.save_pretrained(tmp_path)
    loaded = hf_posenc.from_pretrained(tmp_path)
    ids = tokens(2, MAX_POS + 30)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_remove_after_table_growth_restores_the_original_table():
    model = make_model("gpt2")
    ids = tokens(1, 20)
    with torch.no_grad():
        ref = model(ids).logits
    hf_posenc.extend_context(model, "interpolate", factor=2.0)
    assert model.transformer.wpe.weight.shape[0] == MAX_POS * 2
    hf_posenc.remove_posenc(model)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref)


# ----------------------------------------------------------------------- bias / none
@pytest.mark.parametrize("encoding", ["alibi", "t5", "nope", "sinusoidal"])
def test_encodings_without_scale_only_raise_the_limit(encoding, caplog):
    model = patch(make_model("gpt2"), encoding)
    with caplog.at_level(logging.INFO, logger="hf_posenc"):
        hf_posenc.extend_context(model, "extrapolate", factor=8.0)
    assert "nothing to rescale" in caplog.text
    assert model.config.posenc["extension"]["max_length"] == MAX_POS * 8


# ----------------------------------------------------------------------- errors
def test_method_that_does_not_apply_explains_what_does():
    model = patch(make_model("llama"), "alibi")
    with pytest.raises(ValueError, match=r"'yarn' does not apply .* 'alibi' .*bias.*applicable methods: extrapolate"):
        hf_posenc.extend_context(model, "yarn", factor=2.0)
    with pytest.raises(ValueError, match="applicable methods: interpolate, tile"):
        hf_posenc.extend_context(make_model("gpt2"), "yarn", factor=2.0)


@pytest.mark.parametrize("kwargs,pattern", [
    ({"factor": 1.0}, "factor must be a number > 1"),
    ({"factor": 0.5}, "factor must be a number > 1"),
    ({}, "give factor= .* or max_length="),
    ({"factor": 2.0, "max_length": 200}, "contradict"),
    ({"max_length": 32}, "above the trained length 64"),
    ({"factor": 2.0, "beta": 3}, r"unknown option\(s\) \['beta'\] for method 'yarn'.*beta_fast"),
])
def test_bad_extension_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        hf_posenc.extend_context(make_model("llama"), "yarn", **kwargs)


def test_unknown_method_lists_methods():
    with pytest.raises(ValueError, match="unknown context-extension method 'yarm'.*yarn"):
        hf_posenc.extend_context(make_model("llama"), "yarm", factor=2.0)


def test_extending_twice_is_refused_and_existing_scaling_is_never_dropped():
    model = hf_posenc.extend_context(make_model("llama"), "linear", factor=2.0)
    with pytest.raises(ValueError, match="already extended with 'linear'"):
        hf_posenc.extend_context(model, "yarn", factor=2.0)
    scaled = make_model("llama", rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0})
    with pytest.raises(ValueError, match="already uses transformers' 'linear' RoPE scaling"):
        hf_posenc.extend_context(scaled, "yarn", factor=2.0)


def test_consistent_factor_and_max_length_are_accepted():
    model = hf_posenc.extend_context(make_model("llama"), "linear", factor=2.0, max_length=128)
    assert model.config.posenc["extension"]["max_length"] == 128
