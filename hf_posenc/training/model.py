"""The model side of fine-tuning: load (hub id, directory, GGUF, the embedded SmolLM2, or a
random init from a config), switch (--posenc), extend (--extend), check lengths, add LoRA, and
save the result so ``hf_posenc.from_pretrained`` loads it."""
from __future__ import annotations

import json
import logging
import os
from typing import Any

from .errors import FinetuneError

logger = logging.getLogger("hf_posenc.training")

# LoRA target modules per family, and the LongLoRA-style trainable groups (substrings of parameter names).
_QKVO = ["q_proj", "k_proj", "v_proj", "o_proj"]
DEFAULT_LORA_TARGETS = {
    "gpt2": ["attn.c_attn", "attn.c_proj"],
    "bert": ["query", "key", "value"],
    "roberta": ["query", "key", "value"],
    "llama": _QKVO, "mistral": _QKVO, "qwen2": _QKVO, "qwen3": _QKVO, "gemma": _QKVO, "gemma3_text": _QKVO,
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense"],
    "gpt_neox": ["query_key_value", "attention.dense"],
}
TRAINABLE_PATTERNS = {
    "embeddings": ("embed_tokens", ".wte.", "word_embeddings", "token_type_embeddings"),
    "norms": ("norm", ".ln_", "LayerNorm", "layernorm"),
    "positional": ("hf_posenc.", ".wpe.", "position_embeddings"),
}


def _auto_class(objective: str):
    import transformers

    return transformers.AutoModelForMaskedLM if objective == "mlm" else transformers.AutoModelForCausalLM


def _is_embedded(name: str | None) -> bool:
    from ..default_model import EMBEDDED_MODEL_NAMES

    return name is None or name.lower() in EMBEDDED_MODEL_NAMES


def _read_config_json(path: str) -> dict | None:
    file = os.path.join(path, "config.json")
    if os.path.isfile(file):
        with open(file) as f:
            return json.load(f)
    return None


def load_model(args) -> tuple[Any, Any]:
    """``(model, tokenizer)`` in train mode, patched (--posenc) and extended (--extend) as asked."""
    from transformers import AutoConfig, AutoTokenizer

    from .. import from_pretrained
    from ..default_model import load_model_and_tokenizer

    name, auto_class = args.model, _auto_class(args.objective)
    load_kwargs = {"attn_implementation": args.attn_implementation}
    looks_local = os.path.sep in name or name.startswith((".", "~")) or name.endswith(".gguf")
    if not _is_embedded(name) and not os.path.exists(os.path.expanduser(name)) and looks_local and not _hub_like(name):
        raise FinetuneError(f"--model: no such file or directory {name!r}")
    name = os.path.expanduser(name)
    block = None
    try:
        if args.from_scratch:
            if _is_embedded(name) or name.endswith(".gguf"):
                raise FinetuneError("--from-scratch needs a config directory or hub id, not a GGUF model")
            config = AutoConfig.from_pretrained(name)
            block = getattr(config, "posenc", None)
            if block is not None:
                del config.posenc
            model = auto_class.from_config(config, **load_kwargs)
            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or name)
        elif os.path.isdir(name) and (_read_config_json(name) or {}).get("posenc") is not None:
            model = from_pretrained(name, auto_class=auto_class, **load_kwargs)  # an hf_posenc-patched checkpoint
            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or name)
        else:
            model, tokenizer = load_model_and_tokenizer(None if _is_embedded(name) else name,
                                                        auto_class=auto_class, **load_kwargs)
            if args.tokenizer:
                tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    except FinetuneError:
        raise
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc) or "Unrecognized model" in str(exc):
            kind = "a masked-LM (BERT-style) model" if args.objective == "mlm" else "a causal LM"
            raise FinetuneError(f"--model {args.model!r} is not {kind} for --objective {args.objective}: {exc}") from exc
        raise FinetuneError(f"--model {args.model!r}: {exc}") from exc
    except (OSError, ImportError, FileNotFoundError) as exc:
        raise FinetuneError(f"--model {args.model!r} could not be loaded (not a local model and not found on the hub, "
                            f"or offline): {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if block is not None:
        _apply_block(model, block)
    apply_position_options(model, args)
    model.train()
    model.config.use_cache = False
    return model, tokenizer


def _hub_like(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def _apply_block(model, block: dict) -> None:
    from .. import apply_posenc, extend_context

    apply_posenc(model, block["encoding"], **block.get("options", {}))
    ext = block.get("extension")
    if ext:
        extend_context(model, ext["method"], factor=ext["factor"], original_max_length=ext["original_max_length"],
                       **ext.get("params", {}))


def apply_position_options(model, args) -> None:
    """--posenc then --extend, with errors that name the flag."""
    from .. import apply_posenc, extend_context, get_posenc
    from ..registry import get_family
    from ..variants import parse_variant

    if args.posenc or args.extend:
        try:
            get_family(model)
        except ValueError as exc:
            raise FinetuneError(f"--posenc/--extend: {exc}") from exc
    if args.posenc:
        try:
            enc, options = parse_variant(args.posenc)
        except ValueError as exc:
            raise FinetuneError(f"--posenc: {exc}") from exc
        existing = get_posenc(model)
        if existing is not None:
            raise FinetuneError(f"--posenc: the model is already patched with {existing.encoding.name!r} (its saved "
                                f"config has a posenc block); train it as it is, or start from the unpatched model")
        try:
            apply_posenc(model, enc, **options)
        except ValueError as exc:
            raise FinetuneError(f"--posenc {args.posenc!r}: {exc}") from exc
    if args.extend:
        try:
            method, options = parse_variant(args.extend)
        except ValueError as exc:
            raise FinetuneError(f"--extend: {exc}") from exc
        factor, max_length = options.pop("factor", None), options.pop("max_length", None)
        try:
            extend_context(model, method, factor=factor, max_length=max_length, **options)
        except ValueError as exc:
            raise FinetuneError(f"--extend {args.extend!r}: {exc}") from exc


def _native(model) -> str | None:
    """The family's native encoding ("absolute" table or "rotary"); None for families hf_posenc does not know."""
    from ..registry import get_family

    try:
        return get_family(model).native
    except ValueError:
        return None


def length_limit(model) -> tuple[int | None, str]:
    """(longest input the model accepts, what sets it); ``None``: no hard limit."""
    from ..patching import get_posenc
    from ..registry import get_family

    controller = get_posenc(model)
    if controller is not None:
        limit = controller.max_length()
        return limit, f"the {controller.encoding.name!r} position table"
    if _native(model) == "absolute":
        return get_family(model).spec(model).max_positions, "the model's learned position table"
    return None, ""


def trained_length(model) -> int | None:
    from .. import compat

    try:
        return int(compat.original_max_length(model.config) or 0) or None
    except Exception:  # noqa: BLE001 - only for a warning
        return getattr(model.config, "max_position_embeddings", None)


def extension_length(model) -> int | None:
    from ..patching import get_posenc

    controller = get_posenc(model)
    ext = controller.extension if controller is not None else None
    return ext["max_length"] if ext else None


def check_lengths(model, args, needed: int, eval_lengths: list[int]) -> None:
    """Refuse a training/eval length over a learned table; warn past a rotary model's trained length."""
    limit, what = length_limit(model)
    if limit is not None:
        why = f"--pose-target-len {needed}" if args.pose else f"--seq-len {needed}"
        if needed > limit:
            hint = (f"extend it first, e.g. --extend interpolate:max_length={needed} (or tile:max_length={needed})"
                    if "table" in what else "")
            raise FinetuneError(f"{why} exceeds {what} of {limit} positions; {hint or 'use a shorter length'}")
        over = [n for n in eval_lengths if n > limit]
        if over:
            raise FinetuneError(f"--eval-lengths {over} exceed {what} of {limit} positions; "
                                f"drop them or --extend the model to that length")
    elif _native(model) == "rotary":
        trained = extension_length(model) or trained_length(model)
        if trained and needed > trained:
            logger.warning("training length %d is beyond the model's context of %d positions (no --extend)",
                           needed, trained)


def add_lora(model, args):
    """Wrap ``model`` in a peft LoRA model; --lora-trainable groups are made fully trainable too."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise FinetuneError("--lora needs peft: pip install peft") from exc
    model_type = model.config.model_type
    targets = args.lora_targets or DEFAULT_LORA_TARGETS.get(model_type)
    if not targets:
        raise FinetuneError(f"--lora: no default target modules for model type {model_type!r}; pass --lora-targets")
    names = [n for n, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        raise FinetuneError(f"--lora-targets {missing} match no module of this {model_type} model")
    config = LoraConfig(r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                        target_modules=targets, fan_in_fan_out=model_type == "gpt2",
                        task_type="CAUSAL_LM" if args.objective == "clm" else None)
    peft_model = get_peft_model(model, config)
    for group in args.lora_trainable:
        matched = [p for n, p in peft_model.named_parameters()
                   if "lora_" not in n and any(s in f".{n}" for s in TRAINABLE_PATTERNS[group])]
        if not matched:
            logger.warning("--lora-trainable %s: this model has no such parameters", group)
        for p in matched:
            p.requires_grad_(True)
    return peft_model


def trainable_summary(model) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters": total, "trainable_parameters": trainable}


def save_final(accelerator, model, tokenizer, directory: str, lora: bool, checkpointing: bool = False) -> None:
    """Save the trained model (LoRA merged) with ``save_pretrained`` + the tokenizer, on the main process."""
    unwrapped = accelerator.unwrap_model(model)
    sharded = accelerator.distributed_type.name in ("FSDP", "DEEPSPEED")
    state_dict = accelerator.get_state_dict(model) if sharded and not lora else None
    if accelerator.is_main_process:
        os.makedirs(directory, exist_ok=True)
        target = unwrapped.merge_and_unload() if lora else unwrapped
        target.config.use_cache = True
        if checkpointing:
            target.gradient_checkpointing_disable()
        target.save_pretrained(directory, state_dict=state_dict, safe_serialization=True)
        tokenizer.save_pretrained(directory)
    accelerator.wait_for_everyone()


__all__ = ["load_model", "apply_position_options", "length_limit", "check_lengths", "add_lora", "save_final",
           "DEFAULT_LORA_TARGETS", "TRAINABLE_PATTERNS"]
