"""Rotary position embedding (Su et al., 2021) in transformers' half-split layout."""
from __future__ import annotations

import torch

from ..registry import register_encoding
from .base import ModelSpec, Option, PositionalEncoding, positive


def rope_inv_freq(head_dim: int, theta: float, partial_rotary_factor: float = 1.0) -> torch.Tensor:
    """Inverse frequencies [head_dim // 2] (fp32), as transformers computes them.

    With ``partial_rotary_factor < 1`` the first ``int(head_dim * factor) // 2`` pairs rotate with
    frequencies over that rotary dimension (transformers' convention); the other pairs get 0.
    """
    dim = int(head_dim * partial_rotary_factor)
    inv = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    return pad_inv_freq(inv, head_dim)


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor, dtype: torch.dtype, scaling: float = 1.0):
    """positions [..., L], inv_freq [head_dim // 2] -> cos, sin [..., L, head_dim] in the half-split layout.

    Angles in fp32, one cast at the end (the same operations as transformers' rotary modules).
    """
    freqs = positions[..., None].float() * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * scaling).to(dtype), (emb.sin() * scaling).to(dtype)


def pad_inv_freq(inv_freq: torch.Tensor, width: int) -> torch.Tensor:
    """Inverse frequencies padded with zeros (pairs that do not rotate) to ``width // 2``.

    Longer inputs may be cut to that size if only zeros are dropped."""
    inv = inv_freq.float().cpu().flatten()
    n = width // 2
    if inv.numel() > n and bool(inv[n:].any()):
        raise ValueError(f"{inv.numel()} rotary frequencies do not fit a rotary width of {width}")
    out = torch.zeros(n, dtype=torch.float32)
    out[: min(n, inv.numel())] = inv[:n]
    return out


@register_encoding("rope")
class Rope(PositionalEncoding):
    description = "rotary q/k encoding (half-split layout, weight-compatible with pretrained Llama)"
    kind = "rotary"
    OPTIONS = {
        "theta": Option(float, 10000.0, "rotary base (default: the model's own rope_theta, else 10000)", positive,
                        "must be > 0"),
        "partial_rotary_factor": Option(float, 1.0, "fraction of each head's dimensions that rotate",
                                        lambda x: 0 < x <= 1, "must be in (0, 1]"),
    }

    @classmethod
    def default_options(cls, spec: ModelSpec):
        opts = super().default_options(spec)
        if spec.native == "rotary" and spec.rope_theta is not None:
            opts["theta"] = spec.rope_theta
            opts["partial_rotary_factor"] = spec.partial_rotary_factor
        return opts

    def __init__(self, spec: ModelSpec, **options):
        super().__init__(spec, **options)
        if spec.head_dim % 2:
            raise ValueError(f"rope needs an even head dimension, this model has {spec.head_dim}")
        rotated = int(spec.head_dim * self.options["partial_rotary_factor"])
        if rotated > spec.rotary_dim:
            raise ValueError(
                f"this {spec.model_type} model rotates only the first {spec.rotary_dim} of {spec.head_dim} dims of "
                f"each head; rope partial_rotary_factor={self.options['partial_rotary_factor']} would rotate "
                f"{rotated} (use at most {spec.rotary_dim / spec.head_dim})"
            )
        # Plain attributes, not buffers: model.to(bf16) must not round frequencies.
        self.set_scaling(rope_inv_freq(spec.head_dim, self.options["theta"], self.options["partial_rotary_factor"]))

    def set_scaling(self, inv_freq: torch.Tensor, attention_scaling: float = 1.0) -> None:
        """Use these inverse frequencies [<= rotary_dim // 2] and cos/sin multiplier (context extension)."""
        self._inv_freq = pad_inv_freq(inv_freq, self.spec.rotary_dim)
        self.attention_scaling = float(attention_scaling)

    def inv_freq(self, device) -> torch.Tensor:
        if self._inv_freq.device != torch.device(device):
            self._inv_freq = self._inv_freq.to(device)
        return self._inv_freq

    def matches_native(self) -> bool:
        """True when the model's own rotary module computes exactly this encoding."""
        s = self.spec
        return (
            s.native == "rotary"
            and s.rope_type == "default"
            and s.rope_theta == self.options["theta"]
            and s.partial_rotary_factor == self.options["partial_rotary_factor"]
        )

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype, inv_freq: torch.Tensor | None = None):
        """positions [..., L] -> cos, sin [..., L, rotary_dim] (the width the family applies)."""
        inv = self.inv_freq(positions.device) if inv_freq is None else inv_freq
        return rope_cos_sin(positions, inv, dtype, self.attention_scaling)
