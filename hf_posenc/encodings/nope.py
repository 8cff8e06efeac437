"""No positional encoding (Kazemnejad et al., 2023): order only through the causal mask."""
from __future__ import annotations

from ..registry import register_encoding
from .base import PositionalEncoding


@register_encoding("nope")
class NoPE(PositionalEncoding):
    description = "no positional information beyond the causal mask"
    kind = "none"
