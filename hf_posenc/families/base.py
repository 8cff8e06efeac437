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

    def forward_root(self, model: nn.Module) -> nn.Module:
        """The module every forward (and generate step) passes through with input ids, mask, cache
        and position ids: the per-forward pre-hook goes there (OPT's heads skip ``OPTModel``)."""
        return self.base_model(model)

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

    def absolute_positions(self, model: nn.Module, controller: nn.Module, zero: bool, spec: ModelSpec) -> nn.Module:
        """The module that takes the native absolute table's place (its call signature must match)."""
        from ..modules import AbsolutePositions

        return AbsolutePositions(controller, zero=zero, hidden_size=spec.hidden_size)

    def position_offset(self, base: nn.Module) -> int:
        """What the family adds to 0-based position ids (RoBERTa: padding_idx + 1)."""
        return 0

    def grow_table(self, old: nn.Module, grow, length: int) -> nn.Module:
        """The native table ``old`` grown to ``length`` positions with ``grow(weight[L, E], length)``."""
        from ..extension.tables import grown_embedding

        return grown_embedding(old, grow(old.weight, length))

    def ensure_length(self, base: nn.Module, length: int) -> list[tuple[nn.Module, str, object]]:
        """Make the base model's length-sized buffers hold ``length`` positions.

        Returns (module, buffer name, original tensor) for what was replaced, so it can be restored.
        """
        return []
