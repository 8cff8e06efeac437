"""Trainable absolute position table (GPT-2 / BERT style)."""
from __future__ import annotations

import torch
from torch import nn

from ..registry import register_encoding
from .base import ModelSpec, Option, PositionalEncoding, positive


@register_encoding("learned")
class Learned(PositionalEncoding):
    description = "trainable absolute table (GPT-2/BERT keep theirs; others get a zero-initialised one)"
    kind = "absolute"
    OPTIONS = {
        "max_length": Option(int, None, "table length (default: the model's max_position_embeddings)", positive,
                             "must be > 0"),
    }

    def __init__(self, spec: ModelSpec, **options):
        super().__init__(spec, **options)
        length = self.options["max_length"]
        # A model with its own table keeps it: the patch is the identity.
        self.native = spec.native == "absolute"
        if self.native:
            if length not in (None, spec.max_positions):
                raise ValueError(
                    f"this {spec.model_type} model already has a learned table of {spec.max_positions} positions; "
                    f"to change its length use hf_posenc.extend_context (interpolate/tile), not max_length={length}"
                )
            self.options["max_length"] = spec.max_positions
            self.table = None
        else:
            if length is None:
                if spec.max_positions is None:
                    raise ValueError("learned needs max_length: the model config has no max_position_embeddings")
                length = self.options["max_length"] = spec.max_positions
            # Zero init: the patched model starts equal to the NoPE model.
            self.table = nn.Embedding(length, spec.hidden_size)
            nn.init.zeros_(self.table.weight)

    def max_length(self) -> int | None:
        return self.options["max_length"]

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return self.table(position_ids)
