"""T5 relative position bias (Raffel et al., 2020): learned scalars per head and distance bucket."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..registry import register_encoding
from .base import ModelSpec, Option, PositionalEncoding, positive


def t5_bucket(relative_position: torch.Tensor, bidirectional: bool, num_buckets: int, max_distance: int):
    """Bucket ids of ``relative_position = key_pos - query_pos``.

    Half the buckets hold exact distances 0..max_exact-1; the rest cover distances up to
    ``max_distance`` on a log scale; farther distances share the last bucket. Bidirectional
    buckets split the range between keys before and after the query.
    """
    bucket = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative_position > 0).long() * num_buckets
        n = relative_position.abs()
    else:
        n = (-relative_position).clamp(min=0)
    max_exact = num_buckets // 2
    is_small = n < max_exact
    # n is at least max_exact where this branch is used; clamp avoids log(0) elsewhere.
    scaled = torch.log(n.clamp(min=1).float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (scaled * (num_buckets - max_exact)).long()
    large = large.clamp(max=num_buckets - 1)
    return bucket + torch.where(is_small, n, large)


@register_encoding("t5")
class T5Bias(PositionalEncoding):
    description = "T5 bucketed relative bias, learned per head (shared across layers by default)"
    kind = "bias"
    OPTIONS = {
        "num_buckets": Option(int, 32, "number of buckets", lambda x: x >= 4, "must be >= 4"),
        "max_distance": Option(int, 128, "distance at which buckets saturate", positive, "must be > 0"),
        "shared": Option(bool, True, "one table for all layers (as in T5) or one per layer"),
        "init_std": Option(float, 0.0, "std of the normal init (0: zeros, the patched model starts as NoPE)",
                           lambda x: x >= 0, "must be >= 0"),
    }

    def __init__(self, spec: ModelSpec, **options):
        super().__init__(spec, **options)
        o = self.options
        buckets = o["num_buckets"] // 2 if not spec.causal else o["num_buckets"]
        if o["max_distance"] <= buckets // 2:
            raise ValueError(f"t5 max_distance must exceed the exact-bucket range ({buckets // 2})")
        n_tables = 1 if o["shared"] else spec.num_layers
        self.tables = nn.ModuleList(nn.Embedding(o["num_buckets"], spec.num_heads) for _ in range(n_tables))
        for table in self.tables:
            nn.init.normal_(table.weight, std=o["init_std"]) if o["init_std"] > 0 else nn.init.zeros_(table.weight)

    def layer_independent(self) -> bool:
        return self.options["shared"]

    def bias(self, q_pos: torch.Tensor, k_pos: torch.Tensor, layer_idx: int) -> torch.Tensor:
        """q_pos [Q], k_pos [K] -> [1, H, Q, K] fp32."""
        rel = k_pos[None, :] - q_pos[:, None]
        return self.bias_by_distance(rel.flatten(), layer_idx).view(-1, *rel.shape)[None]

    def bias_by_distance(self, distance: torch.Tensor, layer_idx: int) -> torch.Tensor:
        """distance [N] (key_pos - query_pos) -> [H, N] fp32."""
        o = self.options
        buckets = t5_bucket(distance, not self.spec.causal, o["num_buckets"], o["max_distance"])
        table = self.tables[0 if o["shared"] else layer_idx]
        return table.weight.float()[buckets].t()
