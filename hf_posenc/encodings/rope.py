"""Rotary position embedding (Su et al., 2021) in transformers' half-split layout."""
from __future__ import annotations

import torch

from ..registry import register_encoding
from .base import ModelSpec, Option, PositionalEncoding, positive, rope_cos_sin


@register_encoding("rope")
class Rope(PositionalEncoding):
    description = "rotary q/k encoding (half-split layout, weight-compatible with pretrained Llama)"
    kind = "rotary"
    OPTIONS = {
        "theta": Option(float, 10000.0, "rotary base (default: the model's own rope_theta, else 10000)", positive,
                        "must be > 0"),
        "partial_rotary_factor": Option(float, 1.0, "fraction of each head's dimensions that rotate",
                                        lambda x: 0 < x <= 1, "must be in (0, 1]"),
    }

    @classmethod
    def default_options(cls, spec: ModelSpec):
        opts = super().default_options(spec)
        if spec.native == "rotary" and spec.rope_theta is not None:
            opts["theta"] = spec.rope_theta
            opts["partial_rotary_factor"] = spec.partial_rotary_factor
        return opts

    def __init__(self, spec: ModelSpec, **options):
        super().__init__(spec, **options)
        if spec.head_dim % 2:
            raise ValueError(f"rope needs an even head dimension, this model has {spec.head_dim}")

    def matches_native(self) -> bool:
        """True when the model's own rotary module computes exactly this encoding."""
        s = self.spec
        return (
            s.native == "rotary"
            and s.rope_theta == self.options["theta"]
            and s.partial_rotary_factor == self.options["partial_rotary_factor"]
        )

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype):
        """positions [..., L] -> cos, sin [..., L, head_dim]."""
        return rope_cos_sin(positions, self.spec.head_dim, self.options["theta"],
                            self.options["partial_rotary_factor"], dtype)
