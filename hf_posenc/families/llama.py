"""Llama-style decoders (Llama, Mistral, Qwen2): one ``rotary_emb`` on the base model
produces (cos, sin) per forward; each ``layers[i].self_attn`` rotates q/k before the cache."""
from __future__ import annotations

from .. import compat
from ..encodings.base import ModelSpec
from ..registry import register_family
from .base import FamilyAdapter


@register_family("llama", "mistral", "qwen2")
class LlamaAdapter(FamilyAdapter):
    native = "rotary"

    def spec(self, model) -> ModelSpec:
        c = model.config
        return ModelSpec.from_config(c, causal=True, native="rotary", rope_theta=compat.rope_theta(c),
                                     partial_rotary_factor=compat.partial_rotary_factor(c),
                                     rope_type=compat.rope_type(c))

    def layers(self, model):
        return self.base_model(model).layers

    def attention_modules(self, model):
        return [layer.self_attn for layer in self.layers(model)]

    def rotary_slot(self, model):
        return self.base_model(model), "rotary_emb"
