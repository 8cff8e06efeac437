"""Gemma and Gemma3 (text).

Gemma is Llama-style. Gemma3 alternates sliding-window (local) and global layers with one rotary
setting per layer type (``rope_parameters[layer_type]``; local theta 1e4, global 1e6) produced by
one ``rotary_emb(x, position_ids, layer_type)``. ``rope`` with default options keeps that module
(identity); any other encoding replaces it for every layer type. ``rope`` with an explicit other
theta uses that one setting for both layer types. ``extend_context`` on the rotary settings is
refused (it would merge the two): set ``rope_parameters`` per layer type in the config instead.
Attention scaling is ``query_pre_attn_scalar ** -0.5``, passed to in-attention encodings as is.
"""
from __future__ import annotations

import dataclasses

from ..encodings.base import ModelSpec
from ..registry import register_family
from .llama import LlamaAdapter


@register_family("gemma")
class GemmaAdapter(LlamaAdapter):
    pass


@register_family("gemma3_text")
class Gemma3TextAdapter(LlamaAdapter):
    def spec(self, model) -> ModelSpec:
        spec = super().spec(model)
        params = model.config.rope_parameters  # {layer_type: {"rope_type", "rope_theta", ...}}
        full = params.get("full_attention") or next(iter(params.values()))
        types = {p.get("rope_type", "default") for p in params.values()}
        return dataclasses.replace(
            spec, rope_theta=float(full["rope_theta"]),
            rope_type="default" if types == {"default"} else full.get("rope_type", "default"),
            rotary_variants=tuple(sorted(params)),
        )
