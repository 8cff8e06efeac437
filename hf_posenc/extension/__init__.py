"""``extend_context``: one API for every context-extension method, on every supported family.

    extend_context(model, "yarn", factor=4.0)
    extend_context(model, "linear", max_length=16384)

What applies depends on the model's positional encoding (the native one if the model was
not patched):

* rotary (Llama/Mistral/Qwen2 as shipped, or any model patched to ``rope``): ``linear`` (position
  interpolation), ``ntk`` (NTK-aware base change), ``dynamic`` (dynamic NTK, cache-correct),
  ``yarn``, ``llama3``, ``longrope``, ``self_extend`` (training-free grouped attention), ``extrapolate``;
* learned tables (GPT-2 ``wpe``, BERT, ``learned``): ``interpolate``, ``tile``;
* ALiBi, T5, NoPE, sinusoidal: ``extrapolate`` only - nothing to rescale, the limit is raised.

The trained length is ``rope_parameters["original_max_position_embeddings"]`` or
``max_position_embeddings`` (override with ``original_max_length=``). What was done is recorded in
``config.posenc["extension"]``, so ``hf_posenc.from_pretrained`` restores it.
"""
from __future__ import annotations

import logging
import math
from typing import Any

from torch import nn

from .. import compat
from ..encodings.base import Option, _coerce
from ..modules import EncodingRotary, IdentityRotary
from ..patching import apply_posenc, enable_attention, get_posenc, record_in_config, swap_module
from .attention_modes import dynamic_ntk_attention, self_extend_attention
from .tables import grown_embedding, interpolate_table, tile_table

logger = logging.getLogger("hf_posenc")

# method -> (what it applies to, its options)
ROTARY_STATIC = {
    "linear": {},
    "ntk": {},
    "yarn": {"beta_fast": Option(float, 32.0, "YaRN high-frequency boundary"),
             "beta_slow": Option(float, 1.0, "YaRN low-frequency boundary"),
             "attention_factor": Option(float, None, "cos/sin multiplier (default 0.1 ln(factor) + 1)")},
    "llama3": {"low_freq_factor": Option(float, 1.0, "Llama 3.1 low-frequency factor"),
               "high_freq_factor": Option(float, 4.0, "Llama 3.1 high-frequency factor")},
    "longrope": {"long_factor": Option(list, None, "per-frequency rescale factors (required)"),
                 "short_factor": Option(list, None, "accepted for config compatibility; not used"),
                 "attention_factor": Option(float, None, "cos/sin multiplier")},
}
ROTARY_ATTENTION = {
    "dynamic": {"granularity": Option(int, 64, "positions per dynamic-NTK frequency update")},
    "self_extend": {"window": Option(int, None, "neighbour window with exact positions (default: "
                                                  "min(512, trained length / 4))"),
                    "group_size": Option(int, None, "group size (default: smallest that covers max_length)")},
}
TABLE = {"interpolate": {}, "tile": {}}
ANY = {"extrapolate": {}}
METHODS = {**ROTARY_STATIC, **ROTARY_ATTENTION, **TABLE, **ANY}
COMMON = {"original_max_length": Option(int, None, "trained length (default: from the config)")}


def list_methods() -> list[str]:
    return sorted(METHODS)


def extend_context(model: nn.Module, method: str, *, factor: float | None = None, max_length: int | None = None,
                   **params: Any) -> nn.Module:
    """Extend the context of ``model`` in place with ``method``; returns the model.

    Give ``factor`` (new length / trained length, > 1) or ``max_length`` (or both, if they agree).
    """
    if method not in METHODS:
        raise ValueError(f"unknown context-extension method {method!r}; valid methods: {', '.join(list_methods())}")
    controller = get_posenc(model)
    if controller is None:  # an unpatched model: make its native encoding explicit (identity patch)
        apply_posenc(model, "rope" if _adapter(model).native == "rotary" else "learned")
        controller = get_posenc(model)
    if controller.extension is not None:
        raise ValueError(f"model is already extended with {controller.extension['method']!r}; "
                         f"remove_posenc(model) and apply again to change it")
    enc = controller.encoding
    applicable = _applicable(enc)
    if method not in applicable:
        raise ValueError(
            f"method {method!r} does not apply to a model with positional encoding {enc.name!r} ({_kind_doc(enc)}); "
            f"applicable methods: {', '.join(applicable)}"
        )
    if enc.kind == "rotary" and enc.spec.rope_type != "default" and method != "extrapolate":
        raise ValueError(
            f"this model already uses transformers' {enc.spec.rope_type!r} RoPE scaling; hf_posenc will not "
            f"silently replace it. Extend a model without rope scaling, or use it as it is"
        )
    if enc.kind == "rotary" and enc.spec.rotary_variants and method != "extrapolate":
        raise ValueError(
            f"this {enc.spec.model_type} model has separate rotary settings per layer type "
            f"({', '.join(enc.spec.rotary_variants)}); {method!r} would give them one. Set rope_parameters per "
            f"layer type in the config instead (transformers applies them), or use 'extrapolate'"
        )
    opts = _validate(method, params)
    trained = opts.pop("original_max_length") or _trained_length(model, enc)
    factor, max_length = _resolve_length(trained, factor, max_length)
    ext = {"method": method, "factor": factor, "max_length": max_length, "original_max_length": trained,
           "params": opts}

    if method in ROTARY_STATIC:
        inv, attn = _static_scaling(enc, method, factor, max_length, trained, opts)
        enc.set_scaling(inv, attn)
        _use_encoding_rotary(model, controller)
    elif method in ROTARY_ATTENTION:
        if method == "self_extend":
            window = opts["window"] = opts["window"] or min(512, trained // 4)
            if window >= trained:
                raise ValueError(f"self_extend window ({window}) must be smaller than the trained length ({trained})")
            if opts["group_size"] is None:
                opts["group_size"] = max(2, math.ceil((max_length - window) / (trained - window)))
        _rotate_at_attention(model, controller)
        controller.custom_attention = dynamic_ntk_attention if method == "dynamic" else self_extend_attention
    elif method in TABLE:
        _grow_table(model, controller, method, max_length)
    else:
        logger.info("%s: nothing to rescale for encoding %r; length limit raised to %d", method, enc.name,
                    max_length)
    controller.extension = ext
    record_in_config(model, controller)
    return model


# ----------------------------------------------------------------------------- helpers
def _adapter(model):
    from ..registry import get_family

    return get_family(model)


def _applicable(enc) -> list[str]:
    if enc.kind == "rotary" and hasattr(enc, "set_scaling"):
        return sorted([*ROTARY_STATIC, *ROTARY_ATTENTION, *ANY])
    if enc.name == "learned":
        return sorted(TABLE)
    return sorted(ANY)


def _kind_doc(enc) -> str:
    if enc.kind == "bias":
        return "an attention-score bias: it needs no rescaling, use 'extrapolate' to raise the limit"
    if enc.name == "learned":
        return "a learned position table"
    if enc.kind == "rotary":
        return "rotary"
    return "no table or frequencies to rescale: use 'extrapolate' to raise the limit"


def _validate(method: str, params: dict) -> dict:
    spec = {**METHODS[method], **COMMON}
    unknown = sorted(set(params) - set(spec))
    if unknown:
        valid = ", ".join(f"{k} ({o.doc})" for k, o in spec.items())
        raise ValueError(f"unknown option(s) {unknown} for method {method!r}; valid options: {valid}")
    out = {k: o.default for k, o in spec.items()}
    for key, value in params.items():
        opt = spec[key]
        out[key] = list(value) if opt.type is list and value is not None else _coerce(method, key, value, opt)
    if method == "longrope" and not out["long_factor"]:
        raise ValueError("longrope needs long_factor=[...] (one rescale factor per rotary frequency)")
    for key in ("granularity", "window", "group_size", "original_max_length"):
        if out.get(key) is not None and out[key] <= 0:
            raise ValueError(f"option {key} of method {method!r} must be > 0, got {out[key]}")
    return out


def _trained_length(model, enc) -> int:
    if enc.name == "learned":
        return enc.max_length()
    length = compat.original_max_length(model.config) if enc.spec.native == "rotary" else enc.spec.max_positions
    if not length:
        raise ValueError("the model config gives no trained length; pass original_max_length=...")
    return int(length)


def _resolve_length(trained: int, factor, max_length) -> tuple[float, int]:
    if factor is None and max_length is None:
        raise ValueError(f"give factor= (new length / trained length {trained}) or max_length=")
    if factor is not None and (not isinstance(factor, (int, float)) or factor <= 1):
        raise ValueError(f"factor must be a number > 1, got {factor!r}")
    if max_length is not None:
        if not isinstance(max_length, int) or max_length <= trained:
            raise ValueError(f"max_length must be an integer above the trained length {trained}, got {max_length!r}")
        if factor is not None and abs(factor * trained - max_length) >= 1:
            raise ValueError(f"factor={factor} and max_length={max_length} contradict each other "
                             f"(trained length {trained}: factor {factor} means {int(factor * trained)})")
        return (float(factor) if factor is not None else max_length / trained), max_length
    return float(factor), int(factor * trained)


def _static_scaling(enc, method, factor, max_length, trained, opts):
    spec, theta, partial = enc.spec, enc.options["theta"], enc.options["partial_rotary_factor"]
    if method == "ntk":  # NTK-aware: a larger base, theta * factor^(d / (d - 2)) over the rotary dimension
        dim = int(spec.head_dim * partial)
        from ..encodings.rope import rope_inv_freq

        return rope_inv_freq(spec.head_dim, theta * factor ** (dim / (dim - 2)), partial), 1.0
    params = {k: v for k, v in opts.items() if v is not None and k != "short_factor"}
    if method == "longrope":  # long factors throughout: static, hence correct with the KV cache
        params["short_factor"] = params["long_factor"]
    params["factor"] = factor
    return compat.scaled_rope_inv_freq(method, head_dim=spec.head_dim, num_heads=spec.num_heads, theta=theta,
                                       partial_rotary_factor=partial, max_length=max_length,
                                       original_max_length=trained, params=params)


def _rotary_slot(model, controller):
    return controller.adapter.rotary_slot(model)


def _use_encoding_rotary(model, controller) -> None:
    """Families with a rotary module: let the encoding (with its scaling) produce cos/sin."""
    slot = _rotary_slot(model, controller)
    if slot is not None and not isinstance(getattr(*slot), EncodingRotary):
        swap_module(controller, *slot, EncodingRotary(controller))


def _rotate_at_attention(model, controller) -> None:
    """Keys go into the cache unrotated; the custom attention rotates them."""
    slot = _rotary_slot(model, controller)
    if slot is not None:
        swap_module(controller, *slot, IdentityRotary(controller.encoding.spec.rotary_dim))
    controller.rotate_in_attention = False
    enable_attention(model, controller)


def _grow_table(model, controller, method, length) -> None:
    grow = interpolate_table if method == "interpolate" else tile_table
    enc = controller.encoding
    if enc.table is not None:  # our own table (families without a native one)
        enc.table = grown_embedding(enc.table, grow(enc.table.weight, length))
        return
    parent, name = controller.adapter.absolute_slot(model)
    old = getattr(parent, name)
    swap_module(controller, parent, name, controller.adapter.grow_table(old, grow, length))
