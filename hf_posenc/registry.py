"""Registries of positional encodings and model families.

Adding an encoding is one file with a class decorated by ``@register_encoding("name")``;
adding a family is one file with an adapter decorated by ``@register_family("model_type")``.
Both mirror transformers' own ``ROPE_INIT_FUNCTIONS`` / peft's ``register_peft_method`` style.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .encodings.base import PositionalEncoding
    from .families.base import FamilyAdapter

ENCODINGS: dict[str, type["PositionalEncoding"]] = {}
FAMILIES: dict[str, "FamilyAdapter"] = {}


def register_encoding(name: str):
    """Class decorator: make an encoding available to ``apply_posenc(model, name)``."""

    def wrap(cls):
        if name in ENCODINGS and ENCODINGS[name] is not cls:
            raise ValueError(f"positional encoding {name!r} is already registered by {ENCODINGS[name].__name__}")
        cls.name = name
        ENCODINGS[name] = cls
        return cls

    return wrap


def register_family(*model_types: str):
    """Class decorator: the adapter handles models whose ``config.model_type`` is one of ``model_types``."""

    def wrap(cls):
        adapter = cls()
        for model_type in model_types:
            if model_type in FAMILIES:
                raise ValueError(f"model type {model_type!r} already has an adapter")
            FAMILIES[model_type] = adapter
        cls.model_types = model_types
        return cls

    return wrap


def get_encoding_class(name: str) -> type["PositionalEncoding"]:
    if not isinstance(name, str) or name not in ENCODINGS:
        valid = "\n".join(f"  {n}: {cls.description}" for n, cls in sorted(ENCODINGS.items()))
        raise ValueError(f"unknown positional encoding {name!r}; valid encodings are:\n{valid}")
    return ENCODINGS[name]


def get_family(model) -> "FamilyAdapter":
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise ValueError(
            f"hf_posenc does not support model type {model_type!r} ({type(model).__name__}); "
            f"supported model types: {', '.join(sorted(FAMILIES))}"
        )
    return FAMILIES[model_type]


def list_encodings() -> dict[str, str]:
    """Registered encodings: name -> one-line description."""
    return {name: cls.description for name, cls in sorted(ENCODINGS.items())}


def list_families() -> list[str]:
    return sorted(FAMILIES)
