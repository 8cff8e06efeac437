"""BERT: ``embeddings.position_embeddings`` plus length-sized ``position_ids``/``token_type_ids`` buffers."""
from __future__ import annotations

import torch

from ..encodings.base import ModelSpec
from ..registry import register_family
from .base import FamilyAdapter


@register_family("bert")
class BertAdapter(FamilyAdapter):
    native = "absolute"

    def spec(self, model) -> ModelSpec:
        return ModelSpec.from_config(model.config, causal=bool(model.config.is_decoder), native="absolute")

    def layers(self, model):
        return self.base_model(model).encoder.layer

    def attention_modules(self, model):
        return [layer.attention.self for layer in self.layers(model)]

    def absolute_slot(self, model):
        return self.base_model(model).embeddings, "position_embeddings"

    def ensure_length(self, base, length):
        # BertEmbeddings slices default position/token-type ids from buffers sized
        # max_position_embeddings; an encoding without a table needs them longer.
        emb = base.embeddings
        if emb.position_ids.shape[-1] >= length:
            return []
        new_len = max(length, 2 * emb.position_ids.shape[-1])
        replaced = []
        for name in ("position_ids", "token_type_ids"):
            old = getattr(emb, name, None)
            if old is None:
                continue
            new = (torch.arange(new_len, device=old.device)[None] if name == "position_ids"
                   else torch.zeros((1, new_len), dtype=old.dtype, device=old.device))
            emb.register_buffer(name, new.to(old.dtype), persistent=False)
            replaced.append((emb, name, old))
        return replaced
