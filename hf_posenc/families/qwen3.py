"""Qwen3: Llama-style (``rotary_emb`` on the base model, ``layers[i].self_attn``) with per-head
q/k RMS norms applied before the rotation; nothing positional differs from Llama."""
from __future__ import annotations

from ..registry import register_family
from .llama import LlamaAdapter


@register_family("qwen3")
class Qwen3Adapter(LlamaAdapter):
    pass
