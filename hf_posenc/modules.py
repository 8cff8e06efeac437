"""Small modules that take the place of a model's native position modules.

They hold no parameters of their own: trainable tables live in the encoding, which is
registered once under the model's ``hf_posenc`` controller, so every parameter has one
state-dict name whatever the family. References back to the controller are plain
attributes (not submodules) for the same reason.
"""
from __future__ import annotations

import torch
from torch import nn


class _ControllerRef(nn.Module):
    def __init__(self, controller: nn.Module):
        super().__init__()
        object.__setattr__(self, "_controller", controller)  # not a submodule: no duplicate parameters


class AbsolutePositions(_ControllerRef):
    """Replaces a learned table (GPT-2 ``wpe``, BERT ``position_embeddings``).

    ``forward(position_ids[B, L]) -> [B, L, hidden]``: the encoding's addend, or a zero scalar
    (broadcast) when the encoding adds nothing to the embeddings.
    """

    def __init__(self, controller: nn.Module, zero: bool, hidden_size: int):
        super().__init__(controller)
        self.zero = zero
        # An empty [0, hidden] table under the native name: it follows model.to(dtype/device)
        # (the dtype to hand back), and a plain transformers load of a saved checkpoint fails
        # loudly on its size instead of silently initialising a random table.
        self.register_buffer("weight", torch.zeros(0, hidden_size))

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        dtype = self.weight.dtype
        if self.zero:
            return torch.zeros((), dtype=dtype, device=position_ids.device)
        return self._controller.encoding(position_ids).to(dtype)

    def extra_repr(self) -> str:
        return "zero" if self.zero else f"encoding={self._controller.encoding.name}"


class IdentityRotary(nn.Module):
    """Replaces a rotary module: cos = 1, sin = 0 make ``apply_rotary_pos_emb`` the identity.

    ``head_dim`` is the width the family applies (its rotary_dim: partial-rotary families slice
    that many dims). Extra arguments (Gemma3's ``layer_type``) are accepted and ignored.
    """

    def __init__(self, head_dim: int):
        super().__init__()
        self.head_dim = head_dim
        self.attention_scaling = 1.0

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, *args, **kwargs):
        shape = (*position_ids.shape, self.head_dim)
        return (torch.ones(shape, dtype=x.dtype, device=x.device),
                torch.zeros(shape, dtype=x.dtype, device=x.device))


class EncodingRotary(_ControllerRef):
    """Replaces a rotary module with the encoding's own (cos, sin) of ``position_ids``
    (one setting for every layer type, where a family such as Gemma3 has several)."""

    attention_scaling = 1.0

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, *args, **kwargs):
        return self._controller.encoding.cos_sin(position_ids, x.dtype)
