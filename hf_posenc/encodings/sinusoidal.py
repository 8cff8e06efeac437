"""Fixed sinusoidal absolute encoding (Vaswani et al., 2017, section 3.5)."""
from __future__ import annotations

import math

import torch

from ..registry import register_encoding
from .base import Option, PositionalEncoding, positive


def sinusoidal_table(positions: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / base^(2i/d)), PE(pos, 2i+1) = cos(pos / base^(2i/d)).

    positions: [...]; returns [..., dim] in fp32 (interleaved sin/cos as in the paper).
    """
    i = torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32)
    inv = torch.exp(-math.log(base) * i / dim)
    angles = positions.to(torch.float32)[..., None] * inv
    table = torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)
    return table[..., :dim]


@register_encoding("sinusoidal")
class Sinusoidal(PositionalEncoding):
    description = "fixed sin/cos absolute encoding of Vaswani et al., added to the token embeddings"
    kind = "absolute"
    OPTIONS = {
        "base": Option(float, 10000.0, "wavelength base", positive, "must be > 0"),
        "scale": Option(float, 1.0, "multiplier of the encoding", positive, "must be > 0"),
    }

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        """position_ids [B, L] -> [B, L, hidden] (fp32)."""
        table = sinusoidal_table(position_ids, self.spec.hidden_size, self.options["base"])
        return table * self.options["scale"]
