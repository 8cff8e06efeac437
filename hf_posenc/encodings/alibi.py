"""ALiBi: attention with linear biases (Press, Smith & Lewis, 2022)."""
from __future__ import annotations

import math

import torch

from ..registry import register_encoding
from .base import ModelSpec, Option, PositionalEncoding


def alibi_slopes(num_heads: int) -> list[float]:
    """The paper's head slopes: a geometric sequence starting at 2^(-8/n) with that ratio.

    For a head count that is not a power of two, the slopes of the closest lower power of
    two p are followed by every other slope of 2p (the authors' reference implementation).
    """

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if num_heads <= 0:
        raise ValueError("num_heads must be positive")
    p = 2 ** math.floor(math.log2(num_heads))
    if p == num_heads:
        return power_of_two(num_heads)
    return power_of_two(p) + power_of_two(2 * p)[0::2][: num_heads - p]


@register_encoding("alibi")
class ALiBi(PositionalEncoding):
    description = "linear distance penalties per head (Press et al.), causal or symmetric |i-j| for encoders"
    kind = "bias"
    OPTIONS = {
        "slope_scale": Option(float, 1.0, "multiplier of the published slopes", lambda x: x >= 0, "must be >= 0"),
    }

    def __init__(self, spec: ModelSpec, **options):
        super().__init__(spec, **options)
        slopes = torch.tensor(alibi_slopes(spec.num_heads), dtype=torch.float32) * self.options["slope_scale"]
        # Not a buffer: model.to(bf16) must not round the slopes; bias maths stays in fp32.
        self._slopes = slopes
        # Causal ALiBi is rank-one per row: hf_posenc.attention folds it into q/k (no bias tensor).
        self.supports_fused = spec.causal

    def slopes(self, device) -> torch.Tensor:
        if self._slopes.device != torch.device(device):
            self._slopes = self._slopes.to(device)
        return self._slopes

    def bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor, layer_idx: int) -> torch.Tensor:
        """q_pos [Q], k_pos [K] -> [1, H, Q, K] fp32: -m_h * |i - j|.

        For decoders only j <= i survives the causal mask, where |i - j| = i - j.
        """
        dist = (q_pos[:, None] - k_pos[None, :]).abs().to(torch.float32)
        return -(self.slopes(dist.device)[:, None, None] * dist)[None]

    def bias_by_distance(self, distance: torch.Tensor, layer_idx: int) -> torch.Tensor:
        """distance [N] (key_pos - query_pos) -> [H, N] fp32."""
        return -self.slopes(distance.device)[:, None] * distance.abs().to(torch.float32)[None]
