"""Loading patched checkpoints: ``hf_posenc.from_pretrained``.

``model.save_pretrained(d)`` of a patched model writes an ordinary transformers checkpoint
(safetensors) whose config carries a ``posenc`` block. Its state dict differs from the
unpatched model's in known ways: ``*.hf_posenc.*`` tensors (the encoding's parameters and a
format marker) and, where a native table was replaced, an empty ``[0, hidden]`` tensor under
the native name. ``from_pretrained`` loads the base weights with transformers, re-applies the
recorded patch and loads the ``hf_posenc`` tensors itself, then checks that nothing else was
missing, unexpected or mismatched.

A plain ``AutoModel*.from_pretrained(d)`` cannot silently succeed on GPT-2/BERT checkpoints
(the empty table is a size mismatch: transformers raises). Where no native tensor was replaced
(Llama-family), transformers reports the ``hf_posenc.*`` keys as unexpected; with hf_posenc
imported that report is turned into an error (see ``_PlainLoadGuard``).
"""
from __future__ import annotations

import json
import logging
from typing import Any

import torch
import transformers
from safetensors import safe_open
from transformers import AutoConfig
from transformers.utils import cached_file

from .patching import CONTROLLER_ATTR, apply_posenc, get_posenc

PREFIX = f"{CONTROLLER_ATTR}."
logger = logging.getLogger("hf_posenc")
_HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only", "subfolder", "force_download", "proxies")


class PosEncCheckpointError(RuntimeError):
    pass


def _auto_class_for(config):
    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    return transformers.AutoModel


def from_pretrained(path_or_id: str, auto_class=None, **kwargs: Any):
    """Load a model saved by ``save_pretrained`` after ``apply_posenc`` (or any ordinary model).

    Args:
        path_or_id: local directory or hub id.
        auto_class: e.g. ``AutoModelForCausalLM``; default: the class recorded in the config's
            ``architectures`` (falls back to ``AutoModel``).
        **kwargs: passed to ``from_pretrained`` (``dtype``, ``device_map``, ``attn_implementation``,
            ``revision`` ...). Weights are read from safetensors only.
    """
    if kwargs.get("use_safetensors") is False:
        raise ValueError("hf_posenc loads safetensors only (use_safetensors=False is not supported)")
    hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
    config = kwargs.pop("config", None) or AutoConfig.from_pretrained(path_or_id, **hub)
    block = getattr(config, "posenc", None)
    auto_class = auto_class or _auto_class_for(config)
    if block is None:
        return auto_class.from_pretrained(path_or_id, config=config, use_safetensors=True, **kwargs)

    del config.posenc
    with _expected_load_noise():
        model, info = auto_class.from_pretrained(path_or_id, config=config, use_safetensors=True,
                                                 ignore_mismatched_sizes=True, output_loading_info=True, **kwargs)
    apply_posenc(model, block["encoding"], **block.get("options", {}))
    ext = block.get("extension")
    if ext:
        from .extension import extend_context

        extend_context(model, ext["method"], factor=ext["factor"], original_max_length=ext["original_max_length"],
                       **ext.get("params", {}))
    # Tensors transformers could not place (ours, and native tables the patch resized) come from the files.
    wanted = {k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", [])}
    ours, native = _read_tensors(path_or_id, hub, wanted)
    controller = get_posenc(model)
    result = controller.load_state_dict(ours, strict=False)
    problems = list(result.missing_keys) + list(result.unexpected_keys)
    if problems:
        raise PosEncCheckpointError(f"hf_posenc tensors in {path_or_id} do not match the patched model: {problems}")
    if native:
        model.load_state_dict(native, strict=False)
    _check_loading_info(model, info, native)
    return model


def _read_tensors(path_or_id: str, hub: dict, wanted: set[str]):
    """``hf_posenc.*`` tensors of a checkpoint (keyed relative to the controller) and the ``wanted`` keys."""
    files = []
    index = cached_file(path_or_id, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False,
                        **hub)
    if index is not None:
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        names = sorted({file for key, file in weight_map.items() if PREFIX in key or key in wanted})
        files = [cached_file(path_or_id, name, **hub) for name in names]
    else:
        single = cached_file(path_or_id, "model.safetensors", _raise_exceptions_for_missing_entries=False, **hub)
        if single is None:
            raise PosEncCheckpointError(f"{path_or_id} has no safetensors weights; hf_posenc loads safetensors only")
        files = [single]
    ours, native = {}, {}
    for file in files:
        with safe_open(file, framework="pt") as f:
            for key in f.keys():
                if PREFIX in key:
                    ours[key.split(PREFIX, 1)[1]] = f.get_tensor(key)
                elif key in wanted:
                    native[key] = f.get_tensor(key)
    return ours, native


def _check_loading_info(model, info: dict, loaded: dict) -> None:
    """Every missing or mismatched weight must be explained by the patch (nothing random stays)."""
    controller = get_posenc(model)
    replaced = {name for _, name, _ in controller._replaced}
    unexpected = sorted(k for k in info.get("unexpected_keys", []) if PREFIX not in k)
    if unexpected:  # e.g. a head not used by the requested auto class, as transformers would report
        logger.warning("weights in the checkpoint not used by %s: %s", type(model).__name__, unexpected)
    unexplained = [k for k in info.get("missing_keys", [])
                    if k.rsplit(".", 2)[-2] not in replaced and PREFIX not in k]
    unexplained += [k[0] if isinstance(k, tuple) else k for k in info.get("mismatched_keys", [])
                    if (k[0] if isinstance(k, tuple) else k).rsplit(".", 2)[-2] not in replaced
                    and (k[0] if isinstance(k, tuple) else k) not in loaded]
    if unexplained:
        raise PosEncCheckpointError(f"checkpoint does not match the model beyond the positional patch: {unexplained}")


class _expected_load_noise:
    """Silence transformers' load report for the keys we handle ourselves (restored on exit)."""

    def __enter__(self):
        self.logger = logging.getLogger("transformers.modeling_utils")
        self.level = self.logger.level
        _PlainLoadGuard.suspended += 1
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
        _PlainLoadGuard.suspended -= 1
        return False


class _PlainLoadGuard(logging.Filter):
    """With hf_posenc imported, a plain transformers load of a patched checkpoint is an error.

    transformers reports keys it could not place in a load report (a warning of
    ``transformers.modeling_utils``); a report naming ``hf_posenc.`` keys means the
    positional patch was dropped, so this filter raises instead. It only sees the report when
    that logger emits warnings (transformers' default verbosity).
    """

    suspended = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.suspended and "LOAD REPORT" in str(record.msg) and PREFIX in str(record.msg):
            raise PosEncCheckpointError(
                "this checkpoint was saved from a model patched by hf_posenc (its config has a 'posenc' block); "
                "a plain from_pretrained drops the positional patch. Load it with hf_posenc.from_pretrained(path)."
            )
        return True


def install_plain_load_guard() -> None:
    logger = logging.getLogger("transformers.modeling_utils")
    if not any(isinstance(f, _PlainLoadGuard) for f in logger.filters):
        logger.addFilter(_PlainLoadGuard())
