"""FIRE: functional interpolation for relative positions (Li et al., 2023).

    b(i, j) = f_theta( psi(i - j) / psi(max(L, i)) ),   psi(x) = log(c x + 1)

f is a small MLP (1 -> hidden -> heads, ReLU); c > 0 and the threshold L are learned. Dividing
by psi(max(L, i)) maps every query's distances into [0, 1] once i exceeds L ("progressive
interpolation"), so longer inputs reuse the trained input range of f.

``i`` is the query's true position (padding-aware, from ``position_ids`` or the attention mask),
distances come from cache indices; both are invariant to left padding and to the KV cache.
Encoders (bidirectional) use |i - j| and separate outputs for keys before and after the query.

Init: c = 1, L = ``threshold`` (default: the model's max_position_embeddings, else 512); the
MLP's hidden layer gets PyTorch's default init, its output layer zeros (``init_std`` > 0: normal)
so the patched model starts as NoPE.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import register_encoding
from .base import ModelSpec, Option, PositionalEncoding, positive
from .kerple import _inv_softplus


class FireMLP(nn.Module):
    """f_theta plus the learned c and L of one FIRE function."""

    def __init__(self, hidden: int, outputs: int, threshold: float, init_std: float):
        super().__init__()
        self.fc1 = nn.Linear(1, hidden)
        self.fc2 = nn.Linear(hidden, outputs)
        nn.init.normal_(self.fc2.weight, std=init_std) if init_std > 0 else nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)
        self.raw_c = nn.Parameter(_inv_softplus(torch.tensor(1.0)))
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))

    def forward(self, dist: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """dist [B, Q, K] (>= 0), pos [B, Q] true query positions -> [B, Q, K, outputs] fp32."""
        c = F.softplus(self.raw_c.float())
        thr = self.threshold.float().clamp(min=1.0)
        psi = lambda x: torch.log1p(c * x)  # noqa: E731
        x = psi(dist.float()) / psi(torch.maximum(pos.float(), thr))[..., None]
        h = F.relu(x[..., None] * self.fc1.weight.float()[:, 0] + self.fc1.bias.float())
        return h @ self.fc2.weight.float().t() + self.fc2.bias.float()


@register_encoding("fire")
class Fire(PositionalEncoding):
    description = "FIRE learned MLP of log-normalised distance (Li et al.), progressive interpolation"
    kind = "bias"
    needs_positions = True
    OPTIONS = {
        "hidden": Option(int, 32, "hidden width of the MLP", positive, "must be > 0"),
        "threshold": Option(float, None, "initial L (default: max_position_embeddings, else 512)", positive,
                            "must be > 0"),
        "shared": Option(bool, True, "one MLP for all layers (else one per layer)"),
        "init_std": Option(float, 0.0, "std of the output layer's normal init (0: zeros, starts as NoPE)",
                           lambda x: x >= 0, "must be >= 0"),
    }

    @classmethod
    def default_options(cls, spec: ModelSpec):
        opts = super().default_options(spec)
        opts["threshold"] = float(spec.max_positions or 512)
        return opts

    def __init__(self, spec: ModelSpec, **options):
        super().__init__(spec, **options)
        o = self.options
        outputs = spec.num_heads * (1 if spec.causal else 2)  # encoders: keys before / after the query
        n = 1 if o["shared"] else spec.num_layers
        self.mlps = nn.ModuleList(FireMLP(o["hidden"], outputs, o["threshold"], o["init_std"]) for _ in range(n))

    def layer_independent(self) -> bool:
        return self.options["shared"]

    def bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor, layer_idx: int,
             positions: torch.Tensor | None = None) -> torch.Tensor:
        """q_pos [Q], k_pos [K] (cache indices), positions [B|1, Q] true query positions -> [B|1, H, Q, K]."""
        if positions is None:
            positions = q_pos[None]
        rel = q_pos[:, None] - k_pos[None, :]  # i - j
        mlp = self.mlps[0 if self.options["shared"] else layer_idx]
        out = mlp(rel.abs()[None].expand(positions.shape[0], -1, -1), positions)  # [B, Q, K, H or 2H]
        h = self.spec.num_heads
        if self.spec.causal:  # keys after the query are masked
            return out.permute(0, 3, 1, 2)
        before, after = out[..., :h], out[..., h:]
        return torch.where((rel >= 0)[None, :, :, None], before, after).permute(0, 3, 1, 2)
