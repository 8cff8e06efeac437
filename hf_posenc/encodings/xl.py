"""Transformer-XL relative positional encoding (Dai et al., 2019, section 3.3).

The paper's score is (a) + (b) + (c) + (d) with
(a) q_i.k_j content, (b) q_i.W_r R_{i-j}, (c) u.k_j global content bias, (d) v.W_r R_{i-j}.
(a) is the model's own attention; this encoding adds (b) + (c) + (d) as a content-dependent bias

    bias[b, h, i, j] = scaling * (q_i . r_{i-j} + u . k_j + v . r_{i-j}),   r_d = W_r R_d  (per head)

where R_d is the sinusoidal embedding of the relative distance d (Transformer-XL's layout,
[sin | cos]), W_r a learned per-layer projection (rel_dim -> heads * head_dim), and u, v [H, D]
learned (shared across layers as in the authors' code, or per layer). ``scaling`` is the factor the
attention applies to q.k; the bias is added after it, so the position terms are scaled here.

W_r, u, v start at zero (``init_std`` > 0: normal): the patched model starts as NoPE.
q.r is computed once per distinct distance ([B, H, Q, n_dist]) and gathered by i - j.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..registry import register_encoding
from .base import ModelSpec, Option, PositionalEncoding, positive


def xl_relative_embedding(dist: torch.Tensor, dim: int, base: float = 10000.0) -> torch.Tensor:
    """dist [n] -> R [n, dim] fp32: [sin(d w_k) | cos(d w_k)], w_k = base^(-2k/dim) (Transformer-XL)."""
    inv = torch.exp(-math.log(base) * torch.arange(0, dim, 2, device=dist.device, dtype=torch.float32) / dim)
    angles = dist.float()[:, None] * inv
    return torch.cat((angles.sin(), angles.cos()), dim=-1)[:, :dim]


def _repeat_kv(key: torch.Tensor, heads: int) -> torch.Tensor:
    return key if key.shape[1] == heads else key.repeat_interleave(heads // key.shape[1], dim=1)


@register_encoding("xl")
class TransformerXL(PositionalEncoding):
    description = "Transformer-XL relative terms q.W_r R_(i-j) + u.k + v.W_r R_(i-j), learned (Dai et al.)"
    kind = "bias"
    needs_qk = True
    OPTIONS = {
        "rel_dim": Option(int, None, "size of the sinusoidal R (default: the model's hidden size)", positive,
                          "must be > 0"),
        "shared_uv": Option(bool, True, "one u, v for all layers (as in the authors' code) or one per layer"),
        "init_std": Option(float, 0.0, "std of the normal init of W_r, u, v (0: zeros, starts as NoPE)",
                           lambda x: x >= 0, "must be >= 0"),
    }

    @classmethod
    def default_options(cls, spec: ModelSpec):
        return {**super().default_options(spec), "rel_dim": spec.hidden_size}

    def __init__(self, spec: ModelSpec, **options):
        super().__init__(spec, **options)
        o = self.options
        h, d = spec.num_heads, spec.head_dim
        self.w_r = nn.ModuleList(nn.Linear(o["rel_dim"], h * d, bias=False) for _ in range(spec.num_layers))
        n_uv = 1 if o["shared_uv"] else spec.num_layers
        self.u = nn.Parameter(torch.zeros(n_uv, h, d))
        self.v = nn.Parameter(torch.zeros(n_uv, h, d))
        for p in [*self.w_r.parameters(), self.u, self.v]:
            nn.init.normal_(p, std=o["init_std"]) if o["init_std"] > 0 else nn.init.zeros_(p)

    def layer_independent(self) -> bool:
        return False

    def bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor, layer_idx: int, *, query: torch.Tensor,
             key: torch.Tensor, scaling: float) -> torch.Tensor:
        """q_pos [Q], k_pos [K], query [B, H, Q, D], key [B, Hkv, K, D] -> [B, H, Q, K] fp32."""
        h, d = self.spec.num_heads, self.spec.head_dim
        rel = q_pos[:, None] - k_pos[None, :]  # i - j
        if self.spec.causal:  # keys after the query are masked: share distance 0
            rel = rel.clamp(min=0)
        lo, hi = int(rel.min()), int(rel.max())
        dists = torch.arange(lo, hi + 1, device=query.device)
        w = self.w_r[layer_idx].weight.float()  # [H * D, rel_dim]
        r = (xl_relative_embedding(dists, self.options["rel_dim"]) @ w.t()).view(-1, h, d)  # [n, H, D]
        uv = 0 if self.options["shared_uv"] else layer_idx
        u, v = self.u[uv].float(), self.v[uv].float()
        q = query.float()
        qr = torch.einsum("bhqd,nhd->bhqn", q, r) + torch.einsum("hd,nhd->hn", v, r)[None, :, None]
        idx = (rel - lo).expand(*qr.shape[:2], -1, -1)  # [B, H, Q, K]
        pos = qr.gather(-1, idx)
        content = torch.einsum("hd,bhkd->bhk", u, _repeat_kv(key, h).float())[:, :, None, :]
        return scaling * (pos + content)
