"""Tiny random models of every supported family (2 layers, hidden 64) for fast tests."""
from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM,
    MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM,
)
from transformers.utils import logging as hf_logging

import hf_posenc

hf_logging.set_verbosity_error()

VOCAB = 128
MAX_POS = 64
DECODERS = ["gpt2", "llama", "mistral", "qwen2"]
FAMILIES = DECODERS + ["bert"]
ENCODINGS = ["sinusoidal", "learned", "rope", "alibi", "t5", "nope"]
# Options that make every encoding matter in equivalence tests (zero-initialised biases
# would make cache/padding checks pass trivially).
TEST_OPTIONS = {"t5": {"init_std": 0.5}}


def make_model(family: str, attn: str = "sdpa", seed: int = 0, **overrides):
    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if family == "gpt2":
        cfg = GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=MAX_POS, **common, **overrides)
        cls = GPT2LMHeadModel
    elif family == "bert":
        cfg = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                         max_position_embeddings=MAX_POS, **common, **overrides)
        cls = BertForMaskedLM
    else:
        kw = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=MAX_POS, **common)
        if family == "mistral":
            kw["sliding_window"] = None
        kw.update(overrides)
        cfg = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config}[family](**kw)
        cls = {"llama": LlamaForCausalLM, "mistral": MistralForCausalLM, "qwen2": Qwen2ForCausalLM}[family]
    cfg._attn_implementation = attn
    model = cls(cfg).eval()
    model.set_attn_implementation(attn)
    return model


def patch(model, encoding: str, **options):
    opts = {**TEST_OPTIONS.get(encoding, {}), **options}
    hf_posenc.apply_posenc(model, encoding, **opts)
    ctrl = hf_posenc.get_posenc(model)
    table = getattr(ctrl.encoding, "table", None)
    if table is not None:  # zero-initialised learned table: randomise so it matters
        with torch.no_grad():
            table.weight.normal_(std=0.5)
    return model


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (batch, length), generator=g)


@pytest.fixture
def family_model():
    return make_model


# Measured differences, written to $HF_POSENC_REPORT (JSON) at the end of the session.
MEASURED: dict[str, float] = {}


@pytest.fixture
def record():
    def _record(key: str, value: float) -> None:
        MEASURED[key] = max(MEASURED.get(key, 0.0), float(value))

    return _record


def pytest_sessionfinish(session, exitstatus):
    import json
    import os

    path = os.environ.get("HF_POSENC_REPORT")
    if path and MEASURED:
        with open(path, "w") as f:
            json.dump(MEASURED, f, indent=1, sort_keys=True)
