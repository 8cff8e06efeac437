"""The public API: errors, identity patches, isolation, length limits, attention outputs."""
from __future__ import annotations

import math

import pytest
import torch
import transformers
from transformers import AttentionInterface, GPT2Model, GPTJConfig, GPTJForCausalLM, LlamaForCausalLM
from transformers.masking_utils import AttentionMaskInterface

import hf_posenc
from conftest import DECODERS, ENCODINGS, FAMILIES, MAX_POS, make_model, patch, tokens
from hf_posenc.encodings.alibi import alibi_slopes


def test_list_encodings_has_the_seed_encodings_with_descriptions():
    encs = hf_posenc.list_encodings()
    assert set(ENCODINGS) <= set(encs)
    assert all(isinstance(d, str) and len(d) > 10 for d in encs.values())
    assert set(FAMILIES) <= set(hf_posenc.list_families())


def test_unknown_encoding_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown positional encoding 'alibj'(.|\n)*alibi:(.|\n)*t5:"):
        hf_posenc.apply_posenc(make_model("gpt2"), "alibj")


def test_unknown_option_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['thetta'\](.|\n)*theta"):
        hf_posenc.apply_posenc(make_model("gpt2"), "rope", thetta=5.0)


@pytest.mark.parametrize("encoding,options,pattern", [
    ("rope", {"theta": -1.0}, "theta=-1.0 .* must be > 0"),
    ("rope", {"partial_rotary_factor": 1.5}, r"must be in \(0, 1\]"),
    ("rope", {"theta": "abc"}, "must be float"),
    ("t5", {"num_buckets": 2.5}, "must be an integer"),
    ("t5", {"shared": "maybe"}, "must be a bool"),
])
def test_bad_option_values(encoding, options, pattern):
    with pytest.raises(ValueError, match=pattern):
        hf_posenc.apply_posenc(make_model("gpt2"), encoding, **options)


def test_failed_apply_leaves_model_untouched():
    model = make_model("gpt2")
    with pytest.raises(ValueError):
        hf_posenc.apply_posenc(model, "rope", theta=0.0)
    assert hf_posenc.get_posenc(model) is None and not hasattr(model.config, "posenc")


def test_string_options_are_coerced():
    model = hf_posenc.apply_posenc(make_model("gpt2"), "t5", num_buckets="16", shared="false")
    opts = hf_posenc.get_posenc(model).encoding.options
    assert opts["num_buckets"] == 16 and opts["shared"] is False


def test_unsupported_model_type_names_it_and_lists_supported():
    # OPT was the example until issue #9 added it; GPT-J is not supported.
    cfg = GPTJConfig(n_embd=32, n_layer=1, n_head=2, vocab_size=64, n_positions=32, rotary_dim=8,
                     bos_token_id=1, eos_token_id=2)
    with pytest.raises(ValueError, match=r"model type 'gptj'.*supported model types: .*gpt2.*llama"):
        hf_posenc.apply_posenc(GPTJForCausalLM(cfg), "alibi")


def test_patching_twice_is_refused_or_replaces_cleanly():
    model = make_model("llama")
    ids = tokens(1, 12)
    hf_posenc.apply_posenc(model, "alibi")
    with pytest.raises(ValueError, match="already patched with 'alibi'.*replace=True"):
        hf_posenc.apply_posenc(model, "t5")
    hf_posenc.apply_posenc(model, "t5", replace=True, init_std=0.3)
    fresh = patch(make_model("llama"), "t5", init_std=0.3)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(model(ids).logits, fresh(ids).logits)
    assert model.config.posenc["encoding"] == "t5"


def test_remove_on_unpatched_model_errors():
    with pytest.raises(ValueError, match="not patched"):
        hf_posenc.remove_posenc(make_model("gpt2"))


@pytest.mark.parametrize("family,encoding", [("llama", "rope"), ("mistral", "rope"), ("qwen2", "rope"),
                                             ("gpt2", "learned"), ("bert", "learned")])
def test_identity_patches_leave_logits_unchanged(family, encoding):
    model = make_model(family)
    ids = tokens(2, 20)
    with torch.no_grad():
        before = model(ids).logits
        hf_posenc.apply_posenc(model, encoding)
        after = model(ids).logits
    assert torch.equal(before, after)


def test_rope_with_new_theta_equals_native_llama_built_with_that_theta():
    patched = hf_posenc.apply_posenc(make_model("llama"), "rope", theta=500.0)
    native = make_model("llama", rope_parameters={"rope_type": "default", "rope_theta": 500.0})
    native.load_state_dict({k: v for k, v in patched.state_dict().items() if "hf_posenc" not in k})
    ids = tokens(2, 40)
    with torch.no_grad():
        diff = (patched(ids).logits - native(ids).logits).abs().max().item()
    assert diff < 1e-5


def test_rope_on_gpt2_is_relative_and_uses_theta():
    a = hf_posenc.apply_posenc(make_model("gpt2"), "rope", theta=100.0)
    b = hf_posenc.apply_posenc(make_model("gpt2"), "rope", theta=10000.0)
    ids = tokens(1, 20)
    with torch.no_grad():
        assert (a(ids).logits - b(ids).logits).abs().max() > 1e-3


def test_patching_one_model_does_not_change_another():
    a, b = make_model("gpt2"), make_model("gpt2")
    ids = tokens(2, 16)
    globals_before = (GPT2Model.forward, transformers.models.gpt2.modeling_gpt2.eager_attention_forward,
                      AttentionInterface._global_mapping["sdpa"], AttentionMaskInterface._global_mapping["sdpa"],
                      LlamaForCausalLM.forward)
    with torch.no_grad():
        ref = b(ids).logits
        hf_posenc.apply_posenc(a, "alibi")
        a.set_attn_implementation("eager")
        assert (a(ids).logits - ref).abs().max() > 1e-3
        assert torch.equal(b(ids).logits, ref)
    assert b.config._attn_implementation == "sdpa" and not hasattr(b.config, "posenc")
    assert "set_attn_implementation" not in b.__dict__
    globals_after = (GPT2Model.forward, transformers.models.gpt2.modeling_gpt2.eager_attention_forward,
                     AttentionInterface._global_mapping["sdpa"], AttentionMaskInterface._global_mapping["sdpa"],
                     LlamaForCausalLM.forward)
    assert all(x is y for x, y in zip(globals_before, globals_after))


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama"])
@pytest.mark.parametrize("encoding", ["sinusoidal", "rope", "alibi", "t5", "nope"])
def test_unlimited_encodings_accept_inputs_beyond_the_old_limit(family, encoding):
    model = patch(make_model(family), encoding)
    with torch.no_grad():
        out = model(tokens(1, MAX_POS + 40)).logits
    assert out.shape[1] == MAX_POS + 40 and torch.isfinite(out).all()
    assert model.config.posenc["max_length"] is None


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_generate_runs_past_the_old_limit(family):
    model = patch(make_model(family), "alibi")
    with torch.no_grad():
        out = model.generate(tokens(1, MAX_POS - 4), max_new_tokens=20, do_sample=False, eos_token_id=None,
                             pad_token_id=0)
    assert out.shape[1] == MAX_POS + 16


@pytest.mark.parametrize("family", FAMILIES)
def test_learned_table_refuses_over_length_input_and_points_to_extension(family):
    model = patch(make_model(family), "learned")
    with torch.no_grad():
        model(tokens(1, MAX_POS))  # exactly the table size works
        with pytest.raises(ValueError, match=r"needs 65 positions .* has 64.*extend_context"):
            model(tokens(1, MAX_POS + 1))


def test_learned_table_refuses_generation_past_its_size():
    model = patch(make_model("gpt2"), "learned")
    with pytest.raises(ValueError, match="extend_context"):
        model.generate(tokens(1, MAX_POS - 2), max_new_tokens=10, do_sample=False, eos_token_id=None,
                       pad_token_id=0)


def test_learned_on_llama_starts_equal_to_nope():
    ids = tokens(2, 20)
    learned = hf_posenc.apply_posenc(make_model("llama"), "learned")
    nope = hf_posenc.apply_posenc(make_model("llama"), "nope")
    with torch.no_grad():
        assert torch.equal(learned(ids).logits, nope(ids).logits)
    assert hf_posenc.get_posenc(learned).encoding.table.weight.shape == (MAX_POS, 64)


def test_set_attn_implementation_keeps_the_encoding():
    model = patch(make_model("llama"), "alibi")
    ids = tokens(1, 16)
    with torch.no_grad():
        ref = model(ids).logits
        model.set_attn_implementation("eager")
        assert model.config._attn_implementation == "hf_posenc_eager"
        eager = model(ids).logits
        model.model.set_attn_implementation("sdpa")
        assert model.config._attn_implementation == "hf_posenc_sdpa"
        sdpa = model(ids).logits
    assert (eager - ref).abs().max() < 2e-5 and (sdpa - ref).abs().max() < 2e-5
    with pytest.raises(ValueError, match="'sdpa' or 'eager', not 'flash_attention_2'"):
        model.set_attn_implementation("flash_attention_2")


def _manual_llama_layer0_probs(model, ids, bias_fn):
    """Attention probabilities of layer 0 computed by hand (identity rotary)."""
    attn = model.model.layers[0].self_attn
    h = model.model.layers[0].input_layernorm(model.model.embed_tokens(ids))
    b, n, _ = h.shape
    q = attn.q_proj(h).view(b, n, -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(h).view(b, n, -1, attn.head_dim).transpose(1, 2)
    k = k.repeat_interleave(attn.num_key_value_groups, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(attn.head_dim)
    i = torch.arange(n)
    scores = scores + bias_fn(i[:, None], i[None, :])
    scores = scores.masked_fill(i[None, :] > i[:, None], float("-inf"))
    return scores.softmax(-1)


def test_eager_output_attentions_include_alibi_bias():
    model = patch(make_model("llama", "eager"), "alibi")
    ids = tokens(1, 12)
    slopes = torch.tensor(alibi_slopes(4))
    with torch.no_grad():
        probs = model(ids, output_attentions=True).attentions[0]
        manual = _manual_llama_layer0_probs(model, ids, lambda i, j: -slopes[:, None, None] * (i - j).abs())
    assert (probs - manual).abs().max() < 1e-5


def test_eager_output_attentions_include_t5_bias():
    model = patch(make_model("llama", "eager"), "t5", init_std=0.5, num_buckets=8, max_distance=16)
    table = hf_posenc.get_posenc(model).encoding.tables[0].weight
    from hf_posenc.encodings.t5 import t5_bucket

    ids = tokens(1, 12)
    with torch.no_grad():
        probs = model(ids, output_attentions=True).attentions[0]
        manual = _manual_llama_layer0_probs(
            model, ids, lambda i, j: table[t5_bucket(j - i, False, 8, 16)].permute(2, 0, 1))
    assert (probs - manual).abs().max() < 1e-5


def test_bert_alibi_is_symmetric():
    model = patch(make_model("bert", "eager"), "alibi")
    ids = tokens(1, 10)
    with torch.no_grad():
        probs = model(ids, output_attentions=True).attentions[0]
    # with identical tokens the only asymmetry would come from the bias: |i - j| keeps it symmetric
    same = torch.full((1, 9), 5)
    with torch.no_grad():
        p = model(same, output_attentions=True).attentions[0][0, 0]
    assert torch.allclose(p[4, 2], p[4, 6]) and not torch.allclose(p[4, 2], p[4, 0])
    assert probs.shape == (1, 4, 10, 10)


def test_flash_attention_model_gets_a_clear_error():
    model = make_model("llama")
    model.config._attn_implementation_internal = "flash_attention_2"
    with pytest.raises(ValueError, match="needs attn_implementation 'sdpa' or 'eager'"):
        hf_posenc.apply_posenc(model, "alibi")


@pytest.mark.parametrize("family", DECODERS)
def test_config_records_the_patch(family):
    model = patch(make_model(family), "t5")
    assert model.config.posenc == {"encoding": "t5", "options": {"num_buckets": 32, "max_distance": 128,
                                                                 "shared": True, "init_std": 0.5},
                                   "extension": None, "max_length": None, "version": hf_posenc.__version__}
    assert "posenc" in model.config.to_dict()


def test_t5_per_layer_tables():
    model = patch(make_model("llama"), "t5", shared=False)
    enc = hf_posenc.get_posenc(model).encoding
    assert len(enc.tables) == 2
    names = [n for n, _ in model.named_parameters() if "hf_posenc" in n]
    assert "model.hf_posenc.format" in model.state_dict()
    assert names == ["model.hf_posenc.encoding.tables.0.weight", "model.hf_posenc.encoding.tables.1.weight"]
