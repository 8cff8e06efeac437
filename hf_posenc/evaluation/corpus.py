"""Texts to evaluate on: the default long-document corpus, local files, or a ``datasets`` dataset.

The default corpus is the reStructuredText sources of the Python 3.11 documentation as Debian
ships them (package ``python3.11-doc``): ~500 English technical documents, the longest about
55k tokens, available offline wherever the package is installed.
"""
from __future__ import annotations

import glob
import os
from typing import Sequence

DEFAULT_CORPUS_DIR = "/usr/share/doc/python3.11/html/_sources"
INSTALL_HINT = "sudo apt-get install python3.11-doc"
DEFAULT_MIN_BYTES = 8192  # "long documents": shorter pages are indexes and stubs


def default_corpus_files(min_bytes: int = DEFAULT_MIN_BYTES, root: str = DEFAULT_CORPUS_DIR) -> list[str]:
    """Paths of the default corpus documents of at least ``min_bytes`` bytes, largest first
    (ties by path, so the order is deterministic)."""
    files = glob.glob(os.path.join(root, "**", "*.txt"), recursive=True)
    if not files:
        raise FileNotFoundError(
            f"the default evaluation corpus (Python 3.11 documentation sources, {root}/**/*.txt) is not "
            f"installed; install it with `{INSTALL_HINT}` or pass your own texts (--texts FILES_OR_DATASET)")
    sized = [(os.path.getsize(f), f) for f in files]
    return [f for size, f in sorted(sized, key=lambda t: (-t[0], t[1])) if size >= min_bytes]


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


_DATA_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}


def _local_files(spec: str) -> tuple[list[str], list[str]]:
    """(files found, parts that matched nothing) of a comma-separated list of paths/globs."""
    found, missing = [], []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        path = os.path.expanduser(part)
        matches = sorted(glob.glob(path, recursive=True)) if glob.has_magic(path) else [path]
        matches = [m for m in matches if os.path.isfile(m)]
        found += matches
        if not matches:
            missing.append(part)
    return found, missing


def _looks_like_files(spec: str) -> bool:
    """Whether a spec that matched nothing was meant as files (a glob or a file extension)."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    return any(glob.has_magic(p) or (os.path.splitext(p)[1] and not os.path.isdir(p)) for p in parts)


def _read_files(files: list[str], column: str) -> list[str]:
    """One document per plain-text file; rows of ``column`` for json/jsonl/csv/parquet/arrow files."""
    import datasets

    texts = []
    for path in files:
        builder = _DATA_BUILDERS.get(os.path.splitext(path)[1].lower())
        if builder is None:
            texts.append(_read(path))
            continue
        data = datasets.load_dataset(builder, data_files=path, split="train")
        if column not in data.column_names:
            raise ValueError(f"{path} has no {column!r} column (columns: {data.column_names})")
        texts += list(data[column])
    return texts


def _load_dataset_texts(spec: str, column: str) -> list[str]:
    """``path_or_name[:split]`` of a dataset (a ``save_to_disk`` directory or anything
    ``datasets.load_dataset`` accepts); split defaults to ``test`` if present, else the first."""
    import datasets

    name, _, split = spec.partition(":") if not os.path.exists(spec) else (spec, "", "")
    if os.path.isdir(name) and (os.path.isfile(os.path.join(name, "dataset_info.json"))
                                or os.path.isfile(os.path.join(name, "dataset_dict.json"))):
        data = datasets.load_from_disk(name)
    else:
        try:
            data = datasets.load_dataset(name, split=split or None)
        except Exception as exc:  # noqa: BLE001 - re-raised with what was tried
            raise FileNotFoundError(f"texts {spec!r}: not a local file/glob, and datasets.load_dataset failed: "
                                    f"{type(exc).__name__}: {exc}") from exc
    if isinstance(data, datasets.DatasetDict):
        if split:
            data = data[split]
        else:
            split = "test" if "test" in data else next(iter(data))
            data = data[split]
    if column not in data.column_names:
        raise ValueError(f"dataset {spec!r} has no {column!r} column (columns: {data.column_names})")
    return list(data[column])


def load_texts(spec: str | Sequence[str] | None = None, *, min_chars: int = 0, max_documents: int | None = None,
               column: str = "text") -> list[str]:
    """Documents to evaluate on.

    Args:
        spec: ``None`` -> the default corpus (largest documents first); a comma-separated string
            (or a list) of local files / globs, one document per text file (json, jsonl, csv,
            parquet and arrow files give one document per row of ``column``); otherwise a dataset:
            a ``save_to_disk`` directory or a ``datasets.load_dataset`` name/path, optionally
            ``NAME:SPLIT``, one document per row of ``column``.
        min_chars: drop documents shorter than this many characters.
        max_documents: keep only the first this many documents (after ``min_chars``).
    """
    if spec is None:
        files = default_corpus_files()
        texts = [_read(f) for f in files]
    else:
        spec_str = ",".join(spec) if not isinstance(spec, str) else spec
        files, missing = _local_files(spec_str)
        if missing and (files or _looks_like_files(spec_str)):
            raise FileNotFoundError(f"no such file(s): {', '.join(missing)} (texts {spec_str!r})")
        texts = _read_files(files, column) if files else _load_dataset_texts(spec_str, column)
    texts = [t for t in texts if t and len(t) >= min_chars]
    if max_documents is not None:
        texts = texts[:max_documents]
    if not texts:
        raise ValueError(f"no documents of at least {min_chars} characters in texts {spec!r}")
    return texts


__all__ = ["default_corpus_files", "load_texts", "DEFAULT_CORPUS_DIR", "INSTALL_HINT"]
