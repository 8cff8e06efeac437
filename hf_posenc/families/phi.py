"""Phi (Phi-1/1.5/2): Llama-style layout; ``self_attn`` slices the first ``rotary_ndims`` =
``head_dim * partial_rotary_factor`` dims of each head and applies cos/sin of exactly that width."""
from __future__ import annotations

import dataclasses

from ..encodings.base import ModelSpec
from ..registry import register_family
from .llama import LlamaAdapter


@register_family("phi")
class PhiAdapter(LlamaAdapter):
    def spec(self, model) -> ModelSpec:
        spec = super().spec(model)
        return dataclasses.replace(spec, rotary_dim=int(spec.head_dim * spec.partial_rotary_factor))
