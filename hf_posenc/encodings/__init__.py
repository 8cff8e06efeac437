"""Built-in positional encodings; importing this package registers them."""
from . import alibi, learned, nope, rope, sinusoidal, t5  # noqa: F401
from . import cope, fire, kerple, xl, xpos  # noqa: F401
from .base import ModelSpec, Option, PositionalEncoding

__all__ = ["ModelSpec", "Option", "PositionalEncoding"]
