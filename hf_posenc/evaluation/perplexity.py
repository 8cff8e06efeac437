"""Sliding-window perplexity by context length (Press et al.; as used by the PI and YaRN papers).

For a window length ``L`` and stride ``S`` (default ``S = L``), a document of ``N >= L`` tokens is
cut into windows ``[k*S, k*S + L)`` for ``k = 0 .. (N - L) // S`` (only full windows: every scored
token is predicted by a model that sees an ``L``-token input; the tail after the last full
window is not scored). Tokens scored per window (a window's first token has no context in it,
so it is never scored):

* first window of a document: ``L - 1`` (positions 1 .. L-1);
* later windows: the last ``min(S, L - 1)`` positions; the ``L - S`` before them are context only.

Perplexity = ``exp(sum NLL / tokens scored)`` over all windows of all documents used (token
weighted). Documents are tokenised with ``add_special_tokens=False``: no BOS/EOS is inserted,
whatever the tokenizer does by default; ``add_bos=True`` prepends the tokenizer's BOS once per
document (as context, it is never a target). Documents shorter than ``L`` are skipped at that
length and counted; if none is long enough the result says so (``perplexity=None`` and a note)
and a warning is issued.
"""
from __future__ import annotations

import inspect
import math
import time
import warnings
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .results import LengthPerplexity, PerplexityResult

_CE_CHUNK = 2048  # rows per fp32 cross-entropy chunk: bounds the fp32 copy of the logits


def tokenize_documents(tokenizer, texts: Sequence[str | Sequence[int]], *, add_bos: bool = False) -> list[list[int]]:
    """Token ids of each document, without special tokens (pre-tokenised inputs are kept as given)."""
    docs = []
    bos = getattr(tokenizer, "bos_token_id", None) if add_bos else None
    if add_bos and bos is None:
        raise ValueError("add_bos=True but the tokenizer has no bos_token_id")
    for text in texts:
        ids = list(text) if not isinstance(text, str) else tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        docs.append(([bos] if bos is not None else []) + [int(i) for i in ids])
    return docs


def window_plan(num_tokens: int, length: int, stride: int, max_windows: int | None = None) -> list[tuple[int, int]]:
    """``[(start, first_scored_position_in_window), ...]`` for one document (see module docstring)."""
    if num_tokens < length:
        return []
    count = (num_tokens - length) // stride + 1
    if max_windows is not None:
        count = min(count, max_windows)
    later = max(1, length - stride)
    return [(k * stride, 1 if k == 0 else later) for k in range(count)]


def expected_tokens_scored(num_tokens: int, length: int, stride: int, max_windows: int | None = None) -> int:
    """Closed form of the tokens scored in one document (for checks)."""
    return sum(length - s for _, s in window_plan(num_tokens, length, stride, max_windows))


def _device(model) -> torch.device:
    param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return param.device if param is not None else torch.device("cpu")


def _accepts(model, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


@torch.inference_mode()
def window_nll(model, windows: torch.Tensor, first_scored: Sequence[int]) -> tuple[float, int]:
    """Summed NLL (nats, fp32 maths) and token count of a batch of windows.

    windows: [B, L] token ids; first_scored[b]: first position scored in window b (>= 1).
    Position p is predicted by the logits at p - 1, so only logits from min(first_scored) - 1
    on are needed: ``logits_to_keep`` asks the model for just those where it is supported.
    """
    length = windows.shape[1]
    keep = length - min(first_scored) + 1  # logits at positions [L - keep, L)
    kwargs: dict[str, Any] = {"use_cache": False}  # no KV cache: nothing of the layers is kept
    if _accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = keep
    logits = model(input_ids=windows, **kwargs).logits  # [B, keep or L, V]
    offset = length - logits.shape[1]  # absolute position of logits[:, 0]
    total, count = 0.0, 0
    for b, s in enumerate(first_scored):
        targets = windows[b, s:]
        rows = logits[b, s - 1 - offset: length - 1 - offset]  # [L - s, V]
        for i in range(0, rows.shape[0], _CE_CHUNK):
            chunk = rows[i:i + _CE_CHUNK].float()  # fp32 loss even for bf16 models
            total += F.cross_entropy(chunk, targets[i:i + _CE_CHUNK], reduction="sum").item()
        count += targets.numel()
    return total, count


def perplexity_by_length(
    model,
    tokenizer,
    texts: Sequence[str | Sequence[int]],
    lengths: Sequence[int],
    *,
    stride: int | None = None,
    batch_size: int = 1,
    max_documents: int | None = None,
    max_windows_per_document: int | None = None,
    add_bos: bool = False,
    progress: bool = True,
) -> PerplexityResult:
    """Sliding-window perplexity of ``model`` at each window length in ``lengths``.

    Args:
        texts: documents (strings, or lists of token ids used as they are), in priority order.
        lengths: window lengths in tokens.
        stride: window advance (default: the length, i.e. non-overlapping windows).
        batch_size: windows per forward pass (all windows of a length have the same size).
        max_documents: at most this many documents per length: the first ones (in ``texts``
            order) with at least ``length`` tokens.
        max_windows_per_document: only the first windows of each document (1 = the YaRN
            protocol: each document truncated to its first ``length`` tokens).
        add_bos: prepend the tokenizer's BOS to each document (default: no special tokens).
    """
    from tqdm.auto import tqdm

    lengths = [int(n) for n in lengths]
    if not lengths or any(n < 2 for n in lengths):
        raise ValueError(f"lengths must be integers >= 2, got {lengths}")
    if stride is not None and stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    start_all = time.perf_counter()
    docs = tokenize_documents(tokenizer, texts, add_bos=add_bos)
    device = _device(model)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    out = []
    for length in lengths:
        step = stride or length
        start = time.perf_counter()
        long_enough = [d for d in docs if len(d) >= length]
        skipped = len(docs) - len(long_enough)
        used = long_enough[:max_documents] if max_documents is not None else long_enough
        plan = [(d, s, f) for d in used for s, f in window_plan(len(d), length, step, max_windows_per_document)]
        note = ""
        if not used:
            longest = max((len(d) for d in docs), default=0)
            note = f"no document has {length} tokens (longest: {longest}); not evaluated"
            warnings.warn(f"perplexity_by_length: {note}", stacklevel=2)
        total, count = 0.0, 0
        bar = tqdm(total=len(plan), desc=f"perplexity L={length}", disable=not progress, unit="window")
        for i in range(0, len(plan), batch_size):
            batch = plan[i:i + batch_size]
            ids = torch.tensor([d[s:s + length] for d, s, _ in batch], dtype=torch.long, device=device)
            nll, n = window_nll(model, ids, [f for _, _, f in batch])
            total, count = total + nll, count + n
            bar.update(len(batch))
        bar.close()
        mean = total / count if count else None
        out.append(LengthPerplexity(
            length=length, stride=step, perplexity=math.exp(mean) if mean is not None else None, nll=mean,
            tokens_scored=count, windows=len(plan), documents_used=len(used), documents_skipped=skipped,
            seconds=round(time.perf_counter() - start, 3), note=note))
    if was_training:
        model.train()
    settings = {"stride": stride, "batch_size": batch_size, "max_documents": max_documents,
                "max_windows_per_document": max_windows_per_document, "add_bos": add_bos,
                "special_tokens": "bos" if add_bos else "none", "dtype": str(getattr(model, "dtype", ""))}
    return PerplexityResult(lengths=out, documents=len(docs), settings=settings,
                            seconds=round(time.perf_counter() - start_all, 3))


__all__ = ["perplexity_by_length", "tokenize_documents", "window_plan", "expected_tokens_scored", "window_nll"]
