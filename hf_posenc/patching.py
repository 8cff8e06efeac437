"""``apply_posenc`` / ``remove_posenc``: patch one model instance, keep what was replaced.

Only the instance changes: modules are swapped with ``setattr``, hooks are instance hooks,
and the attention implementation is switched through the model's own config to a name we
registered. transformers' classes and module globals are never touched, so patching model
A leaves model B alone, and everything replaced is kept so ``remove_posenc`` restores it.
"""
from __future__ import annotations

import logging
import types
from typing import Any

import torch
from torch import nn

from . import compat
from .encodings.base import PositionalEncoding
from .modules import EncodingRotary, IdentityRotary
from .registry import get_encoding_class, get_family

logger = logging.getLogger("hf_posenc")

CONTROLLER_ATTR = "hf_posenc"
LINK_ATTR = "_hf_posenc_link"
# Version of the checkpoint layout; saved as a buffer so every patched checkpoint carries
# a ``hf_posenc.format`` key that plain loaders report as unexpected.
CHECKPOINT_FORMAT = 1


class PosEncController(nn.Module):
    """Owns the encoding's parameters and everything needed to undo the patch.

    Registered on the base model as ``hf_posenc``, so its parameters are saved as
    ``<base>.hf_posenc.encoding.*``. Per-forward state (the query offset of static caches)
    is set by a forward pre-hook on the base model.
    """

    def __init__(self, adapter, encoding: PositionalEncoding):
        super().__init__()
        self.encoding = encoding
        self.register_buffer("format", torch.tensor([CHECKPOINT_FORMAT]), persistent=True)
        object.__setattr__(self, "adapter", adapter)
        self._replaced: list[tuple[nn.Module, str, Any]] = []  # (parent, name, original) to restore
        self._hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._attn_backup: str | None = None
        self._linked: list[nn.Module] = []
        self._wrapped_models: list[nn.Module] = []
        self._static_offset = None
        self.query_positions = None  # [B|1, Q] true query positions (encodings with needs_positions)
        self.rotate_in_attention = False
        self.needs_attention = False
        # Set by context extensions that compute attention themselves (dynamic NTK, Self-Extend):
        # fn(controller, module, layer_idx, query, key, value, mask, is_causal, native_fn, **kwargs).
        self.custom_attention = None
        self.extension: dict | None = None
        # How score biases are applied (see hf_posenc.attention): "auto", "fused", "bias" or "chunked";
        # "auto" chunks causal prefills longer than causal_chunk rows (chunks of causal_chunk rows
        # that stop at their last key: half the attention work; 128 measured fastest on CPU) and
        # any bias over chunk_threshold elements (H * Q * K). chunk_size overrides both sizes.
        self.attention_path = "auto"
        self.chunk_threshold = 1 << 26
        self.causal_chunk = 128
        self.chunk_size: int | None = None
        self._memo: dict = {}

    # ------------------------------------------------------------- forward-time work
    def query_start(self, q_len: int, k_len: int):
        """Raw cache index of the first query. Keys from non-static caches are contiguous and
        end at the last query; static caches return every slot, so their offset is recorded.
        A static sliding-window layer that has filled up (offset + Q > its K slots) returns
        keys contiguous up to the last query again (Gemma3's local layers)."""
        off = self._static_offset
        if off is None:
            return k_len - q_len
        if isinstance(off, torch.Tensor):
            return torch.where(off + q_len <= k_len, off, k_len - q_len)
        return off if off + q_len <= k_len else k_len - q_len

    def _base_post_hook(self, base: nn.Module, args: tuple, output):
        # Free this forward's shared tensors (a prefill's bias can be GBs) now, not at the next call.
        self._memo = {}

    def _base_pre_hook(self, base: nn.Module, args: tuple, kwargs: dict):
        bound = compat.bind_forward(base, args, kwargs)
        ref = bound.get("input_ids")
        if ref is None:
            ref = bound.get("inputs_embeds")
        if ref is None:
            return None
        q_len = ref.shape[1]
        cache = compat.cache_from_call(bound)
        past = compat.cache_length(cache)
        self._static_offset = past if compat.is_slot_cache(cache) else None
        self._memo = {}

        position_ids = bound.get("position_ids")
        mask = bound.get("attention_mask")
        offset = self.adapter.position_offset(base)  # RoBERTa counts positions from padding_idx + 1
        changed = False
        if (self.encoding.kind == "absolute" and position_ids is None and isinstance(mask, torch.Tensor)
                and mask.dim() == 2):
            # Padding-aware positions, as generate() builds them: left padding does not shift them.
            position_ids = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -q_len:] + offset
            changed = True
        if getattr(self.encoding, "needs_positions", False):
            self.query_positions = self._true_positions(position_ids, mask, past, q_len, ref.device, offset)
        limit = self.max_length() if self.encoding.kind == "absolute" else None
        if limit is not None and not compat.is_compiling():
            needed = int(position_ids.max()) + 1 - offset if position_ids is not None else int(past) + q_len
            if needed > limit:
                raise ValueError(
                    f"input needs {needed} positions but the {self.encoding.name!r} position table has {limit}; "
                    f"extend it first with hf_posenc.extend_context(model, 'interpolate' or 'tile', "
                    f"max_length=...) or switch to an encoding without a length limit"
                )
        if not compat.is_compiling():
            self._replaced += self.adapter.ensure_length(base, int(past) + q_len + offset)
        if not changed:
            return None
        idx = compat.positional_index(base, "position_ids")
        if idx is not None and idx < len(args):
            args = args[:idx] + (position_ids,) + args[idx + 1:]
        else:
            kwargs = {**kwargs, "position_ids": position_ids}
        return args, kwargs

    @staticmethod
    def _true_positions(position_ids, mask, past, q_len: int, device, offset: int) -> torch.Tensor:
        """[B|1, Q] positions of this call's queries: given ids, else padding-aware from a 2-D mask."""
        if position_ids is not None:
            return position_ids.to(device) - offset
        if isinstance(mask, torch.Tensor) and mask.dim() == 2:
            return (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -q_len:].to(device)
        return (torch.arange(q_len, device=device) + past)[None]

    def _add_absolute_hook(self, layer: nn.Module, args: tuple, kwargs: dict):
        """Pre-hook on the first decoder layer of families without an absolute table."""
        hidden = args[0] if args else kwargs["hidden_states"]
        position_ids = kwargs.get("position_ids")
        if position_ids is None:
            position_ids = torch.arange(hidden.shape[1], device=hidden.device)[None]
        hidden = hidden + self.encoding(position_ids).to(hidden.dtype)
        if args:
            return (hidden,) + args[1:], kwargs
        return args, {**kwargs, "hidden_states": hidden}

    def max_length(self) -> int | None:
        """The longest input the patched model accepts (``None``: no limit)."""
        limit = self.encoding.max_length()
        if limit is not None and self.extension is not None:
            return self.extension["max_length"]  # a grown table
        return limit

    def attention_name_for(self, requested: str) -> str:
        if not self.needs_attention or requested in compat.NATIVE_FOR:
            return requested
        if requested in compat.POSENC_FOR:
            return compat.POSENC_FOR[requested]
        raise ValueError(
            f"encoding {self.encoding.name!r} works inside attention and supports attn_implementation "
            f"'sdpa' or 'eager', not {requested!r}"
        )

    def extra_repr(self) -> str:
        return f"kind={self.encoding.kind}"


# ------------------------------------------------------------------------- public API
def get_posenc(model: nn.Module) -> PosEncController | None:
    """The controller of a patched model (``None`` if the model is not patched)."""
    base = getattr(model, "base_model", model)
    return getattr(base, CONTROLLER_ATTR, None) if isinstance(base, nn.Module) else None


def apply_posenc(model: nn.Module, name: str, *, replace: bool = False, **options: Any) -> nn.Module:
    """Switch ``model`` to the positional encoding ``name``, in place; returns the model.

    Args:
        model: a transformers model of a supported family (see ``hf_posenc.list_families()``).
        name: an encoding from ``list_encodings()``.
        replace: if the model is already patched, undo that patch first (otherwise an error).
        **options: the encoding's options (``list_encodings`` / the README list them).
    """
    adapter = get_family(model)
    existing = get_posenc(model)
    if existing is not None:
        if not replace:
            raise ValueError(
                f"model is already patched with {existing.encoding.name!r}; call remove_posenc(model) first "
                f"or pass replace=True"
            )
        remove_posenc(model)
    spec = adapter.spec(model)
    encoding = get_encoding_class(name)(spec, **options)
    base = adapter.base_model(model)
    ref = next(iter(model.parameters()), None)
    if ref is not None:
        encoding.to(device=ref.device, dtype=ref.dtype if ref.dtype.is_floating_point else None)

    controller = PosEncController(adapter, encoding)
    _plan(adapter, model, encoding, controller)
    if controller.needs_attention and compat.attn_implementation(model) not in (*compat.NATIVE_FOR,
                                                                                 *compat.POSENC_FOR):
        raise ValueError(
            f"encoding {name!r} works inside attention and needs attn_implementation 'sdpa' or 'eager'; "
            f"this model uses {compat.attn_implementation(model)!r}: call model.set_attn_implementation('sdpa') first"
        )
    setattr(base, CONTROLLER_ATTR, controller)
    _install(adapter, model, base, controller, spec)
    return model


def _plan(adapter, model, encoding, controller) -> None:
    """Decide where the encoding goes: rotary q/k inside attention where the family has no rotary module."""
    kind = encoding.kind
    native_rotary = adapter.rotary_slot(model) is not None
    # Rotary q/k inside attention where the family has no rotary module, or where the encoding
    # transforms q and k differently (it defines `rotate`): cos/sin alone cannot express it.
    controller.rotate_in_attention = kind == "rotary" and (not native_rotary or hasattr(encoding, "rotate"))
    controller.needs_attention = kind == "bias" or controller.rotate_in_attention


def swap_module(controller, parent: nn.Module, name: str, new: nn.Module) -> None:
    controller._replaced.append((parent, name, getattr(parent, name)))
    setattr(parent, name, new)


def _install(adapter, model, base, controller, spec) -> None:
    enc = controller.encoding
    kind = enc.kind
    abs_slot = adapter.absolute_slot(model)
    rot_slot = adapter.rotary_slot(model)

    # 1. The native absolute table: kept by `learned`, else replaced (zeros or our addend).
    if abs_slot is not None and not getattr(enc, "native", False):
        slot_module = adapter.absolute_positions(model, controller, zero=kind != "absolute", spec=spec)
        swap_module(controller, *abs_slot, slot_module)
    elif abs_slot is None and kind == "absolute":
        layer0 = adapter.layers(model)[0]
        controller._hooks.append(layer0.register_forward_pre_hook(controller._add_absolute_hook, with_kwargs=True))
    # 2. The native rotary module: kept by a matching `rope`, else our cos/sin or the identity.
    if rot_slot is not None:
        if kind != "rotary" or controller.rotate_in_attention:
            swap_module(controller, *rot_slot, IdentityRotary(spec.rotary_dim))
        elif not getattr(enc, "matches_native", lambda: False)():
            swap_module(controller, *rot_slot, EncodingRotary(controller))
    # 3. Attention: link each layer to the controller and switch to our attention names.
    if controller.needs_attention:
        enable_attention(model, controller)
    # 4. Per-forward bookkeeping and length checks.
    root = adapter.forward_root(model)
    controller._hooks.append(root.register_forward_pre_hook(controller._base_pre_hook, with_kwargs=True))
    controller._hooks.append(root.register_forward_hook(controller._base_post_hook))
    # 5. Config: record the patch (saved with the model; transformers' own fields stay untouched).
    record_in_config(model, controller)


def record_in_config(model: nn.Module, controller: "PosEncController") -> None:
    """The ``posenc`` block saved with the config: enough to rebuild the patch on load."""
    enc = controller.encoding
    model.config.posenc = {"encoding": enc.name, "options": dict(enc.options), "extension": controller.extension,
                           "max_length": controller.max_length(), "version": _version()}


def enable_attention(model: nn.Module, controller: "PosEncController") -> None:
    """Route every self-attention layer of ``model`` through the controller (idempotent)."""
    controller.needs_attention = True
    if controller._linked:
        return
    current = compat.attn_implementation(model)
    if current not in compat.NATIVE_FOR and current not in compat.POSENC_FOR:
        raise ValueError(
            f"encoding {controller.encoding.name!r} works inside attention and needs attn_implementation 'sdpa' "
            f"or 'eager'; this model uses {current!r}: call model.set_attn_implementation('sdpa') first"
        )
    for idx, attn in enumerate(controller.adapter.attention_modules(model)):
        object.__setattr__(attn, LINK_ATTR, (controller, idx))
        controller._linked.append(attn)
    controller._attn_backup = current
    compat.set_attn_implementation(model, compat.POSENC_FOR.get(current, current))
    for sub in compat.pretrained_submodels(model):
        sub.set_attn_implementation = types.MethodType(_set_attn_implementation, sub)
        controller._wrapped_models.append(sub)


def _set_attn_implementation(self, attn_implementation, *args, **kwargs):
    """Instance override installed on patched models: keeps the encoding across switches."""
    controller = get_posenc(self)
    if controller is not None and isinstance(attn_implementation, str):
        attn_implementation = controller.attention_name_for(attn_implementation)
    return type(self).set_attn_implementation(self, attn_implementation, *args, **kwargs)


def remove_posenc(model: nn.Module) -> nn.Module:
    """Undo ``apply_posenc``: restore the original modules, attention and config; returns the model.

    Trained non-positional weights are kept; restored modules are cast to the model's current
    device and dtype.
    """
    controller = get_posenc(model)
    if controller is None:
        raise ValueError("model is not patched by hf_posenc (nothing to remove)")
    adapter = controller.adapter
    base = adapter.base_model(model)
    ref = next((p for p in model.parameters() if p.is_floating_point()), None)
    for hook in controller._hooks:
        hook.remove()
    for parent, name, original in reversed(controller._replaced):
        if isinstance(original, nn.Module) and ref is not None:
            _follow_model(original, ref)
        if isinstance(original, torch.Tensor):
            parent.register_buffer(name, original.to(ref.device) if ref is not None else original, persistent=False)
        else:
            setattr(parent, name, original)
    for attn in controller._linked:
        attn.__dict__.pop(LINK_ATTR, None)
    for sub in controller._wrapped_models:
        sub.__dict__.pop("set_attn_implementation", None)
    if controller._attn_backup is not None:
        current = compat.attn_implementation(model)
        compat.set_attn_implementation(model, compat.NATIVE_FOR.get(current, current))
    if hasattr(model.config, "posenc"):
        del model.config.posenc
    delattr(base, CONTROLLER_ATTR)
    return model


def _follow_model(module: nn.Module, ref: torch.Tensor) -> None:
    """Bring a restored module to the model's device, and its parameters to the model's dtype
    (buffers such as rotary ``inv_freq`` keep their own dtype, as they had before the patch)."""
    module.to(device=ref.device)
    with torch.no_grad():
        for p in module.parameters():
            if p.is_floating_point() and p.dtype != ref.dtype:
                p.data = p.data.to(ref.dtype)


def _version() -> str:
    from . import __version__

    return __version__
