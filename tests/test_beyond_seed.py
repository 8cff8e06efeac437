"""Issue #9: the new encodings (xl, xpos, kerple, fire, cope) on every family, and every encoding on
the new families (gpt_neox, opt, phi, qwen3, gemma, gemma3, roberta), through the equivalence
checks of test_matrix.py: cache decoding = full forward (dynamic and static caches), left padding,
padded batch generate, exact remove, save/load, sdpa = eager.

Cells already covered by test_matrix.py (seed encodings x seed families) are not repeated.
"""
from __future__ import annotations

import pytest
import torch
import transformers as T
from transformers import DynamicCache, StaticCache

import hf_posenc
from conftest import DECODERS, ENCODINGS, FAMILIES, MAX_POS, TEST_OPTIONS, VOCAB, make_model, max_diff, tokens

ATOL = 2e-5
NEW_ENCODINGS = ["xl", "xpos", "kerple", "fire", "cope"]
NEW_DECODERS = ["gpt_neox", "opt", "phi", "qwen3", "gemma", "gemma3"]
NEW_ENCODERS = ["roberta"]
ALL_DECODERS = DECODERS + NEW_DECODERS
ALL_FAMILIES = ALL_DECODERS + ["bert"] + NEW_ENCODERS
ALL_ENCODINGS = ENCODINGS + NEW_ENCODINGS
ENCODERS = {"bert", "roberta"}
CAUSAL_ONLY = {"xpos", "cope"}  # refused on encoders (see test_causal_only_encodings_refuse_encoders)
# Non-zero starts so every encoding matters (zero-initialised ones would pass trivially).
NEW_OPTIONS = {
    "xl": {"init_std": 0.2},
    "xpos": {"scale_base": 16.0},  # visible decay within 24 tokens
    "fire": {"init_std": 0.5, "threshold": 8.0},  # progressive interpolation from position 8 on
    "cope": {"init_std": 0.5, "npos_max": 12},  # positions capped inside the test lengths
    "kerple": {},
}
# A few option variants, run on two families.
VARIANTS = [("kerple", {"variant": "power"}), ("fire", {"shared": False}), ("xl", {"shared_uv": False}),
            ("t5", {"shared": False})]


def make_any(family: str, attn: str = "sdpa", seed: int = 0, **overrides):
    """Tiny random model (2 layers, hidden 64) of a seed or new family."""
    if family not in NEW_DECODERS + NEW_ENCODERS:
        return make_model(family, attn, seed, **overrides)
    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2, hidden_size=64,
                  num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=MAX_POS)
    gqa = dict(intermediate_size=128, num_key_value_heads=2, head_dim=16)
    if family == "gpt_neox":  # partial rotary 0.25: 4 of 16 dims rotate
        cfg, cls = T.GPTNeoXConfig(intermediate_size=128, **common), T.GPTNeoXForCausalLM
    elif family == "phi":  # partial rotary 0.5
        cfg, cls = T.PhiConfig(intermediate_size=128, num_key_value_heads=2, **common), T.PhiForCausalLM
    elif family == "qwen3":
        cfg, cls = T.Qwen3Config(**gqa, **common), T.Qwen3ForCausalLM
    elif family == "gemma":
        cfg, cls = T.GemmaConfig(**gqa, **common), T.GemmaForCausalLM
    elif family == "gemma3":  # one local (sliding window 8) and one global layer
        cfg = T.Gemma3TextConfig(**gqa, **common, sliding_window=8, query_pre_attn_scalar=24,
                                 layer_types=["sliding_attention", "full_attention"])
        cls = T.Gemma3ForCausalLM
    elif family == "opt":
        cfg, cls = T.OPTConfig(ffn_dim=128, word_embed_proj_dim=64, **common), T.OPTForCausalLM
    elif family == "roberta":  # as released: pad id 1, table = usable positions + padding_idx + 1
        common.update(max_position_embeddings=MAX_POS + 2, pad_token_id=1, bos_token_id=0)
        cfg, cls = T.RobertaConfig(intermediate_size=128, **common), T.RobertaForMaskedLM
    for key, value in overrides.items():
        setattr(cfg, key, value)
    cfg._attn_implementation = attn
    model = cls(cfg).eval()
    model.set_attn_implementation(attn)
    return model


def patch_any(model, encoding: str, **options):
    opts = {**TEST_OPTIONS.get(encoding, {}), **NEW_OPTIONS.get(encoding, {}), **options}
    hf_posenc.apply_posenc(model, encoding, **opts)
    enc = hf_posenc.get_posenc(model).encoding
    with torch.no_grad():
        if getattr(enc, "table", None) is not None:  # zero-initialised learned table
            enc.table.weight.normal_(std=0.5)
        if encoding in ("kerple", "fire"):  # move off the structured init: every parameter matters
            g = torch.Generator().manual_seed(7)
            for p in enc.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=g).to(p.dtype))
    return model


def _cells(families, encodings):
    return [(f, e) for f in families for e in encodings
            if not (f in FAMILIES and e in ENCODINGS) and not (f in ENCODERS and e in CAUSAL_ONLY)]


DECODER_CELLS = _cells(ALL_DECODERS, ALL_ENCODINGS)
ALL_CELLS = _cells(ALL_FAMILIES, ALL_ENCODINGS)
VARIANT_CELLS = [(f, e, o) for f in ("llama", "gpt2") for e, o in VARIANTS]


def _cache_check(model, record, key):
    ids = tokens(2, 24)
    with torch.no_grad():
        full = model(ids).logits
        for kind in ("dynamic", "static"):
            cache = DynamicCache(config=model.config) if kind == "dynamic" else \
                StaticCache(config=model.config, max_cache_len=32)
            steps = [model(ids[:, :10], cache=cache, use_cache=True).logits]
            for t in range(10, 24):
                steps.append(model(ids[:, t:t + 1], cache=cache, use_cache=True).logits)
            diff = max_diff(torch.cat(steps, dim=1), full)
            record(f"cache/{kind}/{key}", diff)
            assert diff < ATOL, (kind, diff)


def _padding_check(model, record, key):
    long, short = tokens(1, 16, seed=2), tokens(1, 9, seed=3)
    batch = torch.cat([long, torch.cat([torch.zeros(1, 7, dtype=torch.long), short], dim=1)])
    mask = torch.ones_like(batch)
    mask[1, :7] = 0
    with torch.no_grad():
        both = model(batch, attention_mask=mask).logits
        diff = max(max_diff(both[0], model(long).logits[0]), max_diff(both[1, 7:], model(short).logits[0]))
    record(f"padding/{key}", diff)
    assert diff < ATOL


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family,encoding", DECODER_CELLS)
def test_cache_decoding_equals_full_forward(family, encoding, attn, record):
    _cache_check(patch_any(make_any(family, attn), encoding), record, f"{family}/{encoding}/{attn}")


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("family,encoding", ALL_CELLS)
def test_left_padding_matches_single_sequences(family, encoding, attn, record):
    _padding_check(patch_any(make_any(family, attn), encoding), record, f"{family}/{encoding}/{attn}")


@pytest.mark.parametrize("family,encoding,options", VARIANT_CELLS)
def test_option_variants_cache_and_padding(family, encoding, options, record):
    model = patch_any(make_any(family), encoding, **options)
    key = f"{family}/{encoding}-{'-'.join(f'{k}={v}' for k, v in options.items())}"
    _cache_check(model, record, key)
    _padding_check(model, record, key)


@pytest.mark.parametrize("family,encoding", DECODER_CELLS)
def test_left_padded_batch_generate_matches_single(family, encoding):
    model = patch_any(make_any(family), encoding)
    a, b = tokens(1, 10, seed=4), tokens(1, 6, seed=5)
    batch = torch.cat([a, torch.cat([torch.zeros(1, 4, dtype=torch.long), b], 1)])
    mask = torch.ones_like(batch)
    mask[1, :4] = 0
    kw = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
    with torch.no_grad():
        both = model.generate(batch, attention_mask=mask, **kw)
        alone = model.generate(b, **kw)
        single = model.generate(a, **kw)
    assert torch.equal(both[1, 4:], alone[0]) and torch.equal(both[0], single[0])


@pytest.mark.parametrize("family,encoding", ALL_CELLS)
def test_remove_restores_exactly(family, encoding):
    for attn in ("sdpa", "eager"):
        model = make_any(family, attn)
        ids = tokens(2, 12)
        with torch.no_grad():
            before = model(ids).logits
        modules_before = list(model.modules())
        patch_any(model, encoding)
        with torch.no_grad():
            model(tokens(2, 40))  # exercise length-dependent state before removal
        hf_posenc.remove_posenc(model)
        with torch.no_grad():
            assert torch.equal(model(ids).logits, before)
        assert model.config._attn_implementation == attn and not hasattr(model.config, "posenc")
        assert all(a is b for a, b in zip(model.modules(), modules_before))
        assert len(list(model.modules())) == len(modules_before)


@pytest.mark.parametrize("family,encoding", ALL_CELLS)
def test_sdpa_and_eager_agree(family, encoding, record):
    sdpa = patch_any(make_any(family, "sdpa"), encoding)
    eager = patch_any(make_any(family, "eager"), encoding)
    eager.load_state_dict(sdpa.state_dict())
    ids = tokens(2, 20)
    with torch.no_grad():
        diff = max_diff(sdpa(ids).logits, eager(ids).logits)
    record(f"sdpa_vs_eager/{family}/{encoding}", diff)
    assert diff < ATOL


@pytest.mark.parametrize("family,encoding", ALL_CELLS)
def test_save_and_from_pretrained_give_identical_logits(family, encoding, tmp_path):
    model = patch_any(make_any(family), encoding)
    with torch.no_grad():
        for p in hf_posenc.get_posenc(model).parameters():  # trained-looking positional parameters
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(tmp_path)
    loaded = hf_posenc.from_pretrained(tmp_path)
    ids = tokens(2, 20)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
        assert torch.equal(loaded(ids, attention_mask=mask).logits, model(ids, attention_mask=mask).logits)
    assert type(loaded) is type(model) and loaded.config.posenc == model.config.posenc


@pytest.mark.parametrize("family", sorted(ENCODERS))
@pytest.mark.parametrize("encoding", sorted(CAUSAL_ONLY))
def test_causal_only_encodings_refuse_encoders(family, encoding):
    model = make_any(family)
    with pytest.raises(ValueError, match="bidirectional encoder"):
        hf_posenc.apply_posenc(model, encoding)
    assert hf_posenc.get_posenc(model) is None
