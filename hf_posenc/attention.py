"""The attention functions registered as ``hf_posenc_sdpa`` and ``hf_posenc_eager``.

transformers' attention modules look their attention function up by the name in their
config. A patched model's config names one of these; each applies the layer's in-attention
encoding (rotary q/k, score bias) and then calls transformers' own sdpa or the model file's
own eager function, so masks, GQA, dropout and ``output_attentions`` behave as usual.
"""
from __future__ import annotations

from . import compat
from .patching import LINK_ATTR


def _make(native: str):
    def posenc_attention(module, query, key, value, attention_mask, **kwargs):
        fn = compat.native_sdpa() if native == "sdpa" else compat.native_eager(module)
        link = module.__dict__.get(LINK_ATTR)
        if link is not None:
            controller, layer_idx = link
            is_causal = kwargs.get("is_causal")
            if is_causal is None:
                is_causal = getattr(module, "is_causal", True)
            if controller.custom_attention is not None:
                return controller.custom_attention(controller, module, layer_idx, query, key, value,
                                                   attention_mask, is_causal, fn, **kwargs)
            query, key, attention_mask = controller.transform_attention(
                module, layer_idx, query, key, attention_mask, is_causal
            )
        return fn(module, query, key, value, attention_mask, **kwargs)

    posenc_attention.__name__ = f"posenc_{native}_attention"
    return posenc_attention


compat.register_attention_functions(_make)
