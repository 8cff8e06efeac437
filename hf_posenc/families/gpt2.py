"""GPT-2: learned ``wpe`` table added in ``GPT2Model.forward``; attention in ``h[i].attn``."""
from __future__ import annotations

from ..encodings.base import ModelSpec
from ..registry import register_family
from .base import FamilyAdapter


@register_family("gpt2")
class GPT2Adapter(FamilyAdapter):
    native = "absolute"

    def spec(self, model) -> ModelSpec:
        return ModelSpec.from_config(model.config, causal=True, native="absolute")

    def layers(self, model):
        return self.base_model(model).h

    def attention_modules(self, model):
        return [block.attn for block in self.layers(model)]

    def absolute_slot(self, model):
        return self.base_model(model), "wpe"
