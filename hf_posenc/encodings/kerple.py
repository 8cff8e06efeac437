"""KERPLE: kernelized relative positional embedding (Chi et al., 2022), log and power variants.

    log:   b(i, j) = -r1 * log(1 + r2 * |i - j|)      r1, r2 > 0
    power: b(i, j) = -r1 * |i - j| ** r2               r1 > 0, 0 < r2 <= 2

r1, r2 are learned per head (per layer unless ``shared``). They are kept positive through a
softplus (r2 of the power variant through 2 * sigmoid, so it stays in (0, 2)).

Initialisation (ours; the paper samples r1, r2 at random): the model starts ALiBi-like. Power:
r1 = the ALiBi slope m_h, r2 = 1, i.e. exactly ALiBi. Log: r1 = 1, r2 = m_h, so
-log(1 + m_h d) ~ -m_h d near the diagonal and grows only logarithmically beyond.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_encoding
from .alibi import alibi_slopes
from .base import ModelSpec, Option, PositionalEncoding


def _inv_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))  # log(exp(x) - 1), stable for large x


def kerple_bias(dist: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor, variant: str) -> torch.Tensor:
    """dist [Q, K] (|i - j|, >= 0), r1/r2 [H] -> [H, Q, K] fp32."""
    d = dist.to(torch.float32)
    r1, r2 = r1.float()[:, None, None], r2.float()[:, None, None]
    if variant == "log":
        return -r1 * torch.log1p(r2 * d)
    # d ** r2 as exp(r2 log d) with d = 0 handled apart: pow's exponent gradient is nan at 0.
    powered = torch.exp(r2 * torch.log(d.clamp(min=1.0))) * (d > 0)
    return -r1 * powered


@register_encoding("kerple")
class Kerple(PositionalEncoding):
    description = "KERPLE learned log/power distance kernels per head (Chi et al.); starts ALiBi-like"
    kind = "bias"
    OPTIONS = {
        "variant": Option(str, "log", "'log': -r1 log(1 + r2 |i-j|); 'power': -r1 |i-j|^r2",
                          lambda x: x in ("log", "power"), "must be 'log' or 'power'"),
        "shared": Option(bool, False, "one (r1, r2) per head for all layers instead of one per layer"),
    }

    def __init__(self, spec: ModelSpec, **options):
        super().__init__(spec, **options)
        slopes = torch.tensor(alibi_slopes(spec.num_heads), dtype=torch.float32)
        if self.options["variant"] == "power":
            r1, raw2 = slopes, torch.zeros_like(slopes)  # 2 * sigmoid(0) = 1
        else:
            r1, raw2 = torch.ones_like(slopes), _inv_softplus(slopes)
        n = 1 if self.options["shared"] else spec.num_layers
        self.raw_r1 = nn.Parameter(_inv_softplus(r1).repeat(n, 1))  # [n, H]
        self.raw_r2 = nn.Parameter(raw2.repeat(n, 1))

    def layer_independent(self) -> bool:
        return self.options["shared"]

    def coefficients(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(r1, r2) [H] fp32 of a layer."""
        i = 0 if self.options["shared"] else layer_idx
        r1 = F.softplus(self.raw_r1[i].float())
        raw2 = self.raw_r2[i].float()
        r2 = 2 * torch.sigmoid(raw2) if self.options["variant"] == "power" else F.softplus(raw2)
        return r1, r2

    def bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor, layer_idx: int) -> torch.Tensor:
        """q_pos [Q], k_pos [K] -> [1, H, Q, K] fp32 (symmetric in |i - j|; causal models mask j > i)."""
        dist = (q_pos[:, None] - k_pos[None, :]).abs()
        r1, r2 = self.coefficients(layer_idx)
        return kerple_bias(dist, r1, r2, self.options["variant"])[None]

    def bias_by_distance(self, distance: torch.Tensor, layer_idx: int) -> torch.Tensor:
        """distance [N] (key_pos - query_pos) -> [H, N] fp32."""
        r1, r2 = self.coefficients(layer_idx)
        return kerple_bias(distance.abs()[None], r1, r2, self.options["variant"])[:, 0]

