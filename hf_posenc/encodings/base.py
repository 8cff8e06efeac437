"""The base class of positional encodings and the model facts they are built from.

An encoding is a small ``nn.Module`` of one of four kinds:

* ``absolute`` - ``forward(position_ids[B, L]) -> [B, L, hidden]`` added to the token embeddings;
* ``rotary``   - ``cos_sin(positions[..., L], dtype) -> (cos, sin)[..., L, rotary_dim]`` applied to q/k
  in transformers' half-split (``rotate_half``) layout (partial-rotary families such as GPT-NeoX
  and Phi rotate only the first ``rotary_dim`` dims of each head); an encoding that transforms q and k
  differently defines ``rotate(query, key, q_pos, k_pos) -> (query, key)`` instead (applied
  inside attention, after the cache);
* ``bias``     - ``bias(q_pos[Q], k_pos[K], layer_idx) -> [1, H, Q, K]`` (fp32) added to attention scores;
  an encoding whose bias depends on content sets ``needs_qk = True`` and also receives
  ``query=[B, H, Q, D]``, ``key=[B, Hkv, K, D]`` (after any rotation) and ``scaling`` (the factor
  attention applies to q.k; the bias is added after it), returning [B, H, Q, K]; one that depends
  on the true (padding-aware) query positions sets ``needs_positions = True`` and also receives
  ``positions=[B|1, Q]``; one whose bias depends on the distance ``k - q`` alone may also define
  ``bias_by_distance(distance[N], layer_idx) -> [H, N]`` so that long inputs build their chunks by
  copying from one vector instead of recomputing;
* ``none``     - nothing beyond the (causal) mask.

Family adapters decide where each kind is plugged into a given model.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """What an encoding needs to know about the model it is applied to."""

    model_type: str
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    num_layers: int
    causal: bool
    native: str  # "absolute" (learned table) or "rotary"
    max_positions: int | None  # the model's trained/table length
    rope_theta: float | None = None
    partial_rotary_factor: float = 1.0
    rope_type: str = "default"
    # Width of the (cos, sin) the family's attention applies: the first rotary_dim dims of each head
    # rotate (GPT-NeoX, Phi: head_dim * partial_rotary_factor). None: head_dim.
    rotary_dim: int | None = None
    # Layer types with rotary settings of their own (Gemma3: sliding/full attention); () if one.
    rotary_variants: tuple[str, ...] = ()

    def __post_init__(self):
        if self.rotary_dim is None:
            object.__setattr__(self, "rotary_dim", self.head_dim)

    @classmethod
    def from_config(cls, config, *, causal: bool, native: str, **fields) -> "ModelSpec":
        """A spec from transformers' standard config names (``attribute_map`` covers GPT-2's
        ``n_embd``/``n_head``/...); ``fields`` set or override the rest."""
        heads = config.num_attention_heads
        base = dict(
            model_type=config.model_type, hidden_size=config.hidden_size, num_heads=heads,
            num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=getattr(config, "head_dim", None) or config.hidden_size // heads,
            num_layers=config.num_hidden_layers, causal=causal, native=native,
            max_positions=getattr(config, "max_position_embeddings", None),
        )
        return cls(**{**base, **fields})


@dataclass(frozen=True)
class Option:
    """One keyword option of an encoding: its type, default and an optional check."""

    type: type
    default: Any
    doc: str
    check: Callable[[Any], bool] | None = None
    check_doc: str = ""


class PositionalEncoding(nn.Module):
    name: str = ""  # set by @register_encoding
    description: str = ""
    kind: str = "none"
    OPTIONS: dict[str, Option] = {}

    def __init__(self, spec: ModelSpec, **options: Any):
        super().__init__()
        self.spec = spec
        self.options = self.validate_options(spec, options)

    # ----------------------------------------------------------------- options
    @classmethod
    def default_options(cls, spec: ModelSpec) -> dict[str, Any]:
        """Defaults, possibly depending on the model (override where needed)."""
        return {k: o.default for k, o in cls.OPTIONS.items()}

    @classmethod
    def validate_options(cls, spec: ModelSpec, options: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(options) - set(cls.OPTIONS))
        if unknown:
            valid = ", ".join(f"{k} ({o.doc})" for k, o in cls.OPTIONS.items()) or "none"
            raise ValueError(f"unknown option(s) {unknown} for encoding {cls.name!r}; valid options: {valid}")
        resolved = cls.default_options(spec)
        for key, value in options.items():
            opt = cls.OPTIONS[key]
            resolved[key] = _coerce(cls.name, key, value, opt)
        for key, value in resolved.items():
            opt = cls.OPTIONS[key]
            if value is not None and opt.check is not None and not opt.check(value):
                raise ValueError(f"option {key}={value!r} of encoding {cls.name!r} is invalid: {opt.check_doc}")
        return resolved

    # ------------------------------------------------------------ properties
    def max_length(self) -> int | None:
        """Longest sequence the encoding can represent (``None``: no limit)."""
        return None

    def layer_independent(self) -> bool:
        """True when ``bias`` is the same in every layer (then it is built once per forward)."""
        return True

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.options.items())


def _coerce(enc: str, key: str, value: Any, opt: Option) -> Any:
    if value is None:
        return None
    if opt.type is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ValueError(f"option {key} of encoding {enc!r} must be a bool, got {value!r}")
    if opt.type is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"option {key} of encoding {enc!r} must be an integer, got {value!r}")
    if isinstance(value, bool):
        raise ValueError(f"option {key} of encoding {enc!r} must be {opt.type.__name__}, got {value!r}")
    try:
        return opt.type(float(value)) if opt.type is int and isinstance(value, str) else opt.type(value)
    except (TypeError, ValueError):
        raise ValueError(f"option {key} of encoding {enc!r} must be {opt.type.__name__}, got {value!r}") from None


def positive(x) -> bool:
    return x > 0


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, H, L, D]; cos/sin: [L, R] (or broadcastable), R <= D: the first R dims rotate
    (transformers' partial-rotary convention), the rest pass through."""
    r = cos.shape[-1]
    if r == x.shape[-1]:
        return x * cos + rotate_half(x) * sin
    x_rot, x_pass = x[..., :r], x[..., r:]
    return torch.cat((x_rot * cos + rotate_half(x_rot) * sin, x_pass), dim=-1)
