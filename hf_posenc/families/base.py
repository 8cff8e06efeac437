"""Family adapters: where positions live in each transformers model family.

An adapter answers a few questions about a model instance (attention modules, the
native absolute table or rotary module, the first decoder layer) and builds the
``ModelSpec`` encodings are constructed from. It never patches anything itself.
"""
from __future__ import annotations

from torch import nn

from ..encodings.base import ModelSpec


class FamilyAdapter:
    model_types: tuple[str, ...] = ()
    native: str = "absolute"  # "absolute" (learned table) or "rotary"

    def base_model(self, model: nn.Module) -> nn.Module:
        return model.base_model

    def spec(self, model: nn.Module) -> ModelSpec:  # pragma: no cover - abstract
        raise NotImplementedError

    def attention_modules(self, model: nn.Module) -> list[nn.Module]:
        """Self-attention modules in layer order (index = layer index)."""
        raise NotImplementedError  # pragma: no cover

    def layers(self, model: nn.Module) -> nn.ModuleList:
        raise NotImplementedError  # pragma: no cover

    def absolute_slot(self, model: nn.Module) -> tuple[nn.Module, str] | None:
        """(parent, attribute) of the native absolute position module, if any."""
        return None

    def rotary_slot(self, model: nn.Module) -> tuple[nn.Module, str] | None:
        """(parent, attribute) of the native rotary module producing (cos, sin), if any."""
        return None

    def ensure_length(self, base: nn.Module, length: int) -> list[tuple[nn.Module, str, object]]:
        """Make the base model's length-sized buffers hold ``length`` positions.

        Returns (module, buffer name, original tensor) for what was replaced, so it can be restored.
        """
        return []
