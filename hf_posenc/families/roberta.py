"""RoBERTa: BERT's layout, but position ids count from ``padding_idx + 1`` (built from input ids:
pads keep ``padding_idx``), and the table holds ``max_position_embeddings - padding_idx - 1``
usable positions. Encodings see 0-based positions; the offset is added/removed at the table."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ..encodings.base import ModelSpec
from ..modules import AbsolutePositions
from ..registry import register_family
from .bert import BertAdapter


class RobertaAbsolutePositions(AbsolutePositions):
    """Takes ``position_embeddings``' place: RoBERTa's ids minus the offset (pads -> 0)."""

    def __init__(self, controller, zero: bool, hidden_size: int, offset: int):
        super().__init__(controller, zero, hidden_size)
        self.offset = offset

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return super().forward((position_ids - self.offset).clamp(min=0))


@register_family("roberta")
class RobertaAdapter(BertAdapter):
    def spec(self, model) -> ModelSpec:
        spec = super().spec(model)
        usable = spec.max_positions - self.position_offset(self.base_model(model))
        return dataclasses.replace(spec, max_positions=usable)

    def position_offset(self, base) -> int:
        return base.embeddings.padding_idx + 1

    def absolute_positions(self, model, controller, zero, spec):
        offset = self.position_offset(self.base_model(model))
        return RobertaAbsolutePositions(controller, zero, spec.hidden_size, offset)

    def grow_table(self, old: nn.Module, grow, length: int) -> nn.Module:
        """``length`` usable positions after the ``padding_idx + 1`` offset rows (kept)."""
        off = old.padding_idx + 1
        new = nn.Embedding(length + off, old.embedding_dim, padding_idx=old.padding_idx,
                           device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight[:off] = old.weight[:off]
            new.weight[off:] = grow(old.weight[off:], length)
        new.weight.requires_grad_(old.weight.requires_grad)
        return new
