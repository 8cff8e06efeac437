"""Everything that depends on transformers internals lives here.

The rest of the package talks to transformers only through these helpers, so a new
transformers release is adapted in one file. Facts this file relies on are listed in
shared/design/transformers-internals.md and checked by tests/test_compat.py.
"""
from __future__ import annotations

import inspect
import sys
from typing import Any, Callable

import torch
import transformers
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask, sdpa_mask

TRANSFORMERS_VERSION = transformers.__version__

# Our attention implementations live in their own namespace: a name containing
# "flex_attention" would trigger transformers' own flex checks.
POSENC_SDPA = "hf_posenc_sdpa"
POSENC_EAGER = "hf_posenc_eager"
NATIVE_FOR = {POSENC_SDPA: "sdpa", POSENC_EAGER: "eager"}
POSENC_FOR = {native: ours for ours, native in NATIVE_FOR.items()}

# Names the cache argument of a base model's forward may have (5.x renamed it).
_CACHE_ARG_NAMES = ("cache", "past_key_values")


def register_attention_functions(fn_for: Callable[[str], Callable]) -> None:
    """Register our attention functions and their mask builders under our own names.

    Registration adds new names to transformers' extension registries; it changes
    nothing for models that do not select these names. The mask builder must be
    registered too: masking_utils silently returns ``None`` (padding ignored) for
    attention names it does not know.
    """
    AttentionInterface.register(POSENC_SDPA, fn_for("sdpa"))
    AttentionInterface.register(POSENC_EAGER, fn_for("eager"))
    AttentionMaskInterface.register(POSENC_SDPA, sdpa_mask)
    AttentionMaskInterface.register(POSENC_EAGER, eager_mask)


def native_sdpa() -> Callable:
    return sdpa_attention_forward


_EAGER_CACHE: dict[type, Callable] = {}


def native_eager(module: torch.nn.Module) -> Callable:
    """The model file's own ``eager_attention_forward`` for an attention module."""
    cls = type(module)
    fn = _EAGER_CACHE.get(cls)
    if fn is None:
        fn = getattr(sys.modules[cls.__module__], "eager_attention_forward", None)
        if fn is None:  # pragma: no cover - every supported family defines one
            raise RuntimeError(f"{cls.__module__} has no eager_attention_forward")
        _EAGER_CACHE[cls] = fn
    return fn


def attn_implementation(model: PreTrainedModel) -> str:
    return model.config._attn_implementation


def set_attn_implementation(model: PreTrainedModel, name: str) -> None:
    """Set the attention implementation through the class method (bypassing our instance wrapper)."""
    type(model).set_attn_implementation(model, name)


_SIGNATURES: dict[type, inspect.Signature] = {}


def bind_forward(module: torch.nn.Module, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Map a forward call's arguments to parameter names (positional ones included)."""
    cls = type(module)
    sig = _SIGNATURES.get(cls)
    if sig is None:
        sig = _SIGNATURES[cls] = inspect.signature(cls.forward)
    names = [p for p in sig.parameters if p != "self"]
    bound = dict(zip(names, args))
    bound.update(kwargs)
    return bound


def positional_index(module: torch.nn.Module, name: str) -> int | None:
    cls = type(module)
    sig = _SIGNATURES.get(cls) or inspect.signature(cls.forward)
    names = [p for p in sig.parameters if p != "self"]
    return names.index(name) if name in names else None


def cache_from_call(bound: dict[str, Any]):
    for name in _CACHE_ARG_NAMES:
        cache = bound.get(name)
        if cache is not None:
            return cache
    return None


def is_slot_cache(cache) -> bool:
    """True when cache layers return every preallocated slot (static caches), not just the filled ones."""
    if cache is None:
        return False
    layers = getattr(cache, "layers", None)
    if layers is None and hasattr(cache, "self_attention_cache"):  # encoder-decoder wrapper
        layers = cache.self_attention_cache.layers
    return bool(layers) and any(getattr(layer, "is_compileable", False) for layer in layers)


def cache_length(cache):
    """Tokens already in the cache before this call (a tensor for static caches: clone it)."""
    if cache is None:
        return 0
    length = cache.get_seq_length()
    return length.clone() if isinstance(length, torch.Tensor) else length


def is_compiling() -> bool:
    return torch.compiler.is_compiling()


def rope_theta(config) -> float | None:
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" in params:
        return float(params["rope_theta"])
    theta = getattr(config, "rope_theta", None)
    return float(theta) if theta is not None else None


def rope_type(config) -> str:
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict):
        return params.get("rope_type", "default")
    return "default"


def partial_rotary_factor(config) -> float:
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and "partial_rotary_factor" in params:
        return float(params["partial_rotary_factor"])
    return float(getattr(config, "partial_rotary_factor", 1.0) or 1.0)


def pretrained_submodels(model: torch.nn.Module) -> list[PreTrainedModel]:
    return [m for m in model.modules() if isinstance(m, PreTrainedModel)]


def scaled_rope_inv_freq(
    rope_type: str, *, head_dim: int, num_heads: int, theta: float, partial_rotary_factor: float,
    max_length: int, original_max_length: int, params: dict, seq_len: int | None = None,
) -> tuple[torch.Tensor, float]:
    """(inv_freq, attention_factor) of one of transformers' RoPE scalings, computed by
    transformers' own ``ROPE_INIT_FUNCTIONS`` from a stand-in Llama config.

    ``original_max_position_embeddings`` is set explicitly: left out, transformers would
    default it to the new maximum and silently change the scaling.
    """
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope_parameters = {"rope_type": rope_type, "rope_theta": theta, **params}
    if rope_type in ("yarn", "llama3", "longrope"):
        rope_parameters["original_max_position_embeddings"] = original_max_length
    elif rope_type == "dynamic":  # transformers' dynamic NTK reads the trained length from here
        max_length = original_max_length
    if partial_rotary_factor != 1.0:
        rope_parameters["partial_rotary_factor"] = partial_rotary_factor
    config = LlamaConfig(hidden_size=head_dim * num_heads, num_attention_heads=num_heads,
                         num_key_value_heads=num_heads, head_dim=head_dim, max_position_embeddings=max_length,
                         rope_parameters=rope_parameters, num_hidden_layers=1, intermediate_size=1, vocab_size=1,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None)
    kwargs = {"seq_len": seq_len} if seq_len is not None else {}
    inv_freq, attention_factor = ROPE_INIT_FUNCTIONS[rope_type](config, device=None, **kwargs)
    return inv_freq.float(), float(attention_factor)


def original_max_length(config) -> int | None:
    """The pretraining length recorded by transformers (rope scaling) or max_position_embeddings."""
    params = getattr(config, "rope_parameters", None)
    if isinstance(params, dict) and params.get("original_max_position_embeddings"):
        return int(params["original_max_position_embeddings"])
    return getattr(config, "max_position_embeddings", None)


def has_attention_with_lse(query: torch.Tensor) -> bool:
    """Whether :func:`attention_with_lse` has a fused kernel for tensors like ``query``
    (torch's CPU flash kernel; CUDA callers fall back to explicit scores)."""
    return (hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")
            and query.device.type == "cpu" and query.dtype in (torch.float32, torch.bfloat16, torch.float16))


def attention_with_lse(query, key, value, bias, scale):
    """Softmax attention that also returns the log-sum-exp of each row (check
    :func:`has_attention_with_lse` first). query [B, H, Q, D], key/value [B, H, K, D], additive
    bias [B|1, H|1, Q, K] or None -> (out [B, H, Q, D], lse [B, H, Q] float32). Rows whose keys are all
    masked come back with output 0 and lse 0, not -inf: callers must mark them.
    """
    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    return op(query, key, value, attn_mask=bias.to(query.dtype) if bias is not None else None, scale=scale)
