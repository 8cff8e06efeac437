"""OPT: learned ``decoder.embed_positions`` with offset 2, called as
``embed_positions(attention_mask, cache_length, position_ids=None)`` (not like ``nn.Embedding``);
attention in ``decoder.layers[i].self_attn``, which scales q before attention (scaling=1.0).
``OPTForCausalLM`` calls ``model.decoder`` directly, so the per-forward hook goes on the decoder."""
from __future__ import annotations

import torch
from torch import nn

from ..encodings.base import ModelSpec
from ..modules import AbsolutePositions
from ..registry import register_family
from .base import FamilyAdapter

OPT_OFFSET = 2


class OPTAbsolutePositions(AbsolutePositions):
    """Takes ``OPTLearnedPositionalEmbedding``'s place: same call, 0-based positions to the encoding."""

    def forward(self, attention_mask: torch.Tensor, cache_length: int = 0,
                position_ids: torch.Tensor | None = None) -> torch.Tensor:
        if position_ids is None:  # OPT's own rule: padding-aware, pads at -1
            position_ids = (torch.cumsum(attention_mask, dim=1) * attention_mask - 1).long()[:, cache_length:]
        return super().forward(position_ids.clamp(min=0))


@register_family("opt")
class OPTAdapter(FamilyAdapter):
    native = "absolute"

    def spec(self, model) -> ModelSpec:
        return ModelSpec.from_config(model.config, causal=True, native="absolute")

    def forward_root(self, model):
        return self.base_model(model).decoder  # OPTForCausalLM calls model.decoder, not OPTModel

    def layers(self, model):
        return self.base_model(model).decoder.layers

    def attention_modules(self, model):
        return [layer.self_attn for layer in self.layers(model)]

    def absolute_slot(self, model):
        return self.base_model(model).decoder, "embed_positions"

    def absolute_positions(self, model, controller, zero, spec):
        return OPTAbsolutePositions(controller, zero=zero, hidden_size=spec.hidden_size)

    def grow_table(self, old: nn.Module, grow, length: int) -> nn.Module:
        """A table of ``length`` positions after the two offset rows (kept as they are)."""
        new = type(old)(length, old.embedding_dim).to(device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight[:OPT_OFFSET] = old.weight[:OPT_OFFSET]
            new.weight[OPT_OFFSET:] = grow(old.weight[OPT_OFFSET:], length)
        new.weight.requires_grad_(old.weight.requires_grad)
        return new
