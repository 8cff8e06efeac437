"""CoPE: contextual position encoding (Golovneva et al., 2024).

Positions are counted by gates instead of tokens:

    g_ij = sigmoid(scaling * q_i . k_j)               (the scaled dot product)
    p_ij = sum_{t = j..i} g_it                         (causal: keys j..i)
    bias = scaling * ((1 - w) q_i . e[floor(p_ij)] + w q_i . e[ceil(p_ij)]),   w = p_ij - floor(p_ij)

with learned position embeddings e [npos_max, head_dim] per layer, shared across heads; p is
capped at npos_max - 1. ``scaling`` is the factor attention applies to q.k (the paper adds
q.e[p] to the logits next to q.k; the bias is added after scaling, so it is scaled here).
e starts at zero (``init_std`` > 0: normal): the patched model starts as NoPE.

Defined for causal models only: p_ij counts the keys between j and the query i.
"""
from __future__ import annotations

import torch
from torch import nn

from ..registry import register_encoding
from .base import ModelSpec, Option, PositionalEncoding
from .xl import _repeat_kv


def cope_positions(gates: torch.Tensor) -> torch.Tensor:
    """gates [..., Q, K] (zero for keys after the query) -> p [..., Q, K], p_ij = sum_{t >= j} g_it."""
    return gates.flip(-1).cumsum(-1).flip(-1)


def interpolate_logits(pos_logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """pos_logits [..., Q, npos] (q.e[n]), p [..., Q, K] in [0, npos - 1] -> [..., Q, K]."""
    lo = p.floor()
    w = p - lo
    lo = lo.long()
    hi = (lo + 1).clamp(max=pos_logits.shape[-1] - 1)
    return pos_logits.gather(-1, lo) * (1 - w) + pos_logits.gather(-1, hi) * w


@register_encoding("cope")
class CoPE(PositionalEncoding):
    description = "contextual positions: gated counts of keys, interpolated learned embeddings (Golovneva et al.)"
    kind = "bias"
    needs_qk = True
    OPTIONS = {
        "npos_max": Option(int, 64, "number of position embeddings (positions are capped below it)",
                           lambda x: x >= 2, "must be >= 2"),
        "init_std": Option(float, 0.0, "std of the normal init of e (0: zeros, starts as NoPE)",
                           lambda x: x >= 0, "must be >= 0"),
    }

    def __init__(self, spec: ModelSpec, **options):
        if not spec.causal:
            raise ValueError(
                f"cope counts gated keys between key j and query i, which needs a causal model; "
                f"{spec.model_type} is a bidirectional encoder (use alibi, t5, kerple, fire or xl there)"
            )
        super().__init__(spec, **options)
        o = self.options
        self.embeddings = nn.Parameter(torch.zeros(spec.num_layers, o["npos_max"], spec.head_dim))
        if o["init_std"] > 0:
            nn.init.normal_(self.embeddings, std=o["init_std"])

    def layer_independent(self) -> bool:
        return False

    def bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor, layer_idx: int, *, query: torch.Tensor,
             key: torch.Tensor, scaling: float) -> torch.Tensor:
        """q_pos [Q], k_pos [K], query [B, H, Q, D], key [B, Hkv, K, D] -> [B, H, Q, K] fp32."""
        q = query.float()
        k = _repeat_kv(key, query.shape[1]).float()
        future = (k_pos[None, :] > q_pos[:, None])  # static caches also hold empty slots past the query
        gates = torch.sigmoid(scaling * (q @ k.transpose(-1, -2))).masked_fill(future, 0.0)
        p = cope_positions(gates).clamp(max=self.options["npos_max"] - 1)
        pos_logits = scaling * (q @ self.embeddings[layer_idx].float().t())  # [B, H, Q, npos]
        return interpolate_logits(pos_logits, p)
