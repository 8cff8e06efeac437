"""Longer learned position tables: linear interpolation or tiling (Longformer)."""
from __future__ import annotations

import torch
from torch import nn


def interpolate_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """[L, E] -> [length, E] by linear interpolation along positions; rows 0 and L-1 are kept
    as rows 0 and length-1. Maths in fp32, result in the table's dtype."""
    old = table.detach().float()
    n_old = old.shape[0]
    x = torch.arange(length, dtype=torch.float64, device=old.device) * (n_old - 1) / (length - 1)
    lo = x.floor().long().clamp(max=n_old - 1)
    hi = (lo + 1).clamp(max=n_old - 1)
    w = (x - lo.double()).float()[:, None]
    return (old[lo] * (1 - w) + old[hi] * w).to(table.dtype)


def tile_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """[L, E] -> [length, E] with row p = row p mod L (the table copied forward)."""
    idx = torch.arange(length, device=table.device) % table.shape[0]
    return table.detach()[idx].clone()


def grown_embedding(old: nn.Embedding, new_weight: torch.Tensor) -> nn.Embedding:
    emb = nn.Embedding(new_weight.shape[0], new_weight.shape[1], device=new_weight.device, dtype=new_weight.dtype)
    with torch.no_grad():
        emb.weight.copy_(new_weight)
    emb.weight.requires_grad_(old.weight.requires_grad)
    return emb
