"""hf_posenc: switch, extend and measure the positional encodings of Hugging Face models.

    from hf_posenc import apply_posenc, remove_posenc, list_encodings
    apply_posenc(model, "alibi")      # in place, returns the model
    remove_posenc(model)              # restores the original exactly
"""
__version__ = "0.1.0"

from . import encodings, families  # noqa: E402,F401  (register built-ins)
from . import attention  # noqa: E402,F401  (register attention functions)
from .encodings.base import ModelSpec, Option, PositionalEncoding  # noqa: E402
from .patching import apply_posenc, get_posenc, remove_posenc  # noqa: E402
from .registry import list_encodings, list_families, register_encoding, register_family  # noqa: E402
from .extension import extend_context, list_methods  # noqa: E402
from .serialization import PosEncCheckpointError, from_pretrained, install_plain_load_guard  # noqa: E402

install_plain_load_guard()

__all__ = [
    "__version__",
    "apply_posenc",
    "remove_posenc",
    "get_posenc",
    "from_pretrained",
    "extend_context",
    "list_methods",
    "PosEncCheckpointError",
    "list_encodings",
    "list_families",
    "register_encoding",
    "register_family",
    "ModelSpec",
    "Option",
    "PositionalEncoding",
]
