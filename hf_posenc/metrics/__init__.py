"""``evaluate`` metric modules of hf_posenc, loadable offline by local path::

    import evaluate, hf_posenc.metrics
    ppl = evaluate.load(hf_posenc.metrics.path("perplexity_by_length"))
    ppl.compute(predictions=texts, model=model, tokenizer=tokenizer, lengths=[1024, 2048])
    keys = evaluate.load(hf_posenc.metrics.path("passkey_retrieval"))
    keys.compute(lengths=[4096], model=model, tokenizer=tokenizer, trials=2)

Each module is a directory ``<name>/<name>.py`` (evaluate's local-module layout); evaluate
copies the script into its modules cache and imports ``hf_posenc`` from the environment.
"""
from __future__ import annotations

import os

METRICS = ("perplexity_by_length", "passkey_retrieval")
_HERE = os.path.dirname(os.path.abspath(__file__))


def path(name: str) -> str:
    """The directory of metric ``name``, for ``evaluate.load``."""
    if name not in METRICS:
        raise ValueError(f"unknown hf_posenc metric {name!r}; available: {', '.join(METRICS)}")
    return os.path.join(_HERE, name)


def list_metrics() -> tuple[str, ...]:
    return METRICS


__all__ = ["path", "list_metrics", "METRICS"]
