"""GPT-NeoX (Pythia): one ``rotary_emb`` on the base model; ``layers[i].attention`` rotates only the
first ``head_dim * partial_rotary_factor`` dims of each head (the width of the cos/sin it is given)."""
from __future__ import annotations

from .. import compat
from ..encodings.base import ModelSpec
from ..registry import register_family
from .llama import LlamaAdapter


@register_family("gpt_neox")
class GPTNeoXAdapter(LlamaAdapter):
    native = "rotary"

    def spec(self, model) -> ModelSpec:
        c = model.config
        head_dim = c.hidden_size // c.num_attention_heads
        partial = compat.partial_rotary_factor(c)
        return ModelSpec.from_config(c, causal=True, native="rotary", head_dim=head_dim,
                                     num_kv_heads=c.num_attention_heads, rope_theta=compat.rope_theta(c),
                                     partial_rotary_factor=partial, rope_type=compat.rope_type(c),
                                     rotary_dim=int(head_dim * partial))

    def attention_modules(self, model):
        return [layer.attention for layer in self.layers(model)]
