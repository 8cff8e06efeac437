"""PoSE: positional skip-wise training (Zhu et al., 2023, "PoSE: Efficient Context Window
Extension of LLMs via Positional Skip-wise Training").

A training window of ``seq_len`` tokens (contiguous text) gets position ids that cover a much
longer ``target_len``: the window is cut into ``chunks`` pieces and every piece after the first is
shifted by a random skip, so the model sees relative distances and absolute positions of the
target range while paying for ``seq_len`` tokens only. As in the reference implementation (2
chunks): the first chunk keeps positions ``0..l0-1``; the cut points are uniform; the skips are
uniform and non-decreasing, so the ids stay strictly increasing and the last one is at most
``target_len - 1``.

The position ids must reach the positional encoding, which rules out encodings that are
computed inside attention from raw cache indices (ALiBi/T5 biases, RoPE patched into GPT-2/BERT
attention, dynamic NTK and Self-Extend extensions): ``check_pose_support`` refuses those.
"""
from __future__ import annotations

import torch

from .errors import FinetuneError


def pose_position_ids(seq_len: int, target_len: int, generator: torch.Generator, chunks: int = 2) -> torch.Tensor:
    """Strictly increasing position ids ``[seq_len]`` in ``[0, target_len)``, first id 0.

    ``chunks`` pieces with uniformly drawn cut points; piece ``i > 0`` is shifted by ``u_i``
    with ``0 <= u_1 <= ... <= u_{chunks-1} <= target_len - seq_len`` drawn uniformly.
    """
    if target_len < seq_len:
        raise ValueError(f"PoSE target length {target_len} is shorter than the window {seq_len}")
    if not 1 <= chunks <= seq_len:
        raise ValueError(f"chunks must be in [1, {seq_len}], got {chunks}")
    positions = torch.arange(seq_len, dtype=torch.long)
    budget = target_len - seq_len
    if chunks == 1 or budget == 0:
        return positions
    cuts = torch.randperm(seq_len - 1, generator=generator)[:chunks - 1] + 1  # distinct cut points in [1, L-1]
    cuts = torch.sort(cuts).values
    skips = torch.sort(torch.randint(0, budget + 1, (chunks - 1,), generator=generator)).values
    offsets = torch.zeros(seq_len, dtype=torch.long)
    for cut, skip in zip(cuts.tolist(), skips.tolist()):
        offsets[cut:] = skip  # non-decreasing offsets keep the ids strictly increasing
    return positions + offsets


def pose_unsupported_reason(model) -> str | None:
    """Why ``model``'s positional encoding ignores ``position_ids`` (``None``: PoSE works)."""
    from ..patching import get_posenc
    from ..registry import get_family

    controller = get_posenc(model)
    if controller is None:
        try:
            get_family(model)
        except ValueError:
            return None  # not a family hf_posenc knows: assume transformers' own position_ids handling
        return None  # native learned table (GPT-2/BERT) or native rotary (Llama family): both read position_ids
    enc = controller.encoding
    if controller.custom_attention is not None:
        method = (controller.extension or {}).get("method", "?")
        return (f"the {method!r} context extension computes positions inside attention from raw cache indices; "
                f"use a static rotary scaling (linear, ntk, yarn, llama3, longrope) instead")
    if enc.kind == "bias":
        return (f"encoding {enc.name!r} is an attention-score bias computed from raw token indices inside "
                f"attention; it never sees position_ids")
    if controller.rotate_in_attention:
        return (f"encoding {enc.name!r} is applied inside this {model.config.model_type} model's attention from "
                f"raw token indices; use plain rope on a model with a rotary module (Llama family) for rotary PoSE")
    if enc.kind == "none":
        return f"encoding {enc.name!r} has no positions at all"
    return None


def check_pose_support(model) -> None:
    reason = pose_unsupported_reason(model)
    if reason is not None:
        raise FinetuneError(
            "--pose needs a positional encoding that reads position_ids (Llama-family rotary models, learned or "
            f"sinusoidal absolute tables); here {reason}")


__all__ = ["pose_position_ids", "pose_unsupported_reason", "check_pose_support"]
