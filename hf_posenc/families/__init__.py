"""Built-in model families; importing this package registers them."""
from . import bert, gpt2, llama  # noqa: F401
from . import gemma, gpt_neox, opt, phi, qwen3, roberta  # noqa: F401
from .base import FamilyAdapter

__all__ = ["FamilyAdapter"]
