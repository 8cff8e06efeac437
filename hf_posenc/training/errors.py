"""The one error type of ``hf_posenc.training``: a problem with the run's inputs, reported as
``finetune: error: ...`` (exit status 2) by ``hf_posenc.training.main``."""
from __future__ import annotations


class FinetuneError(ValueError):
    """A bad argument, model, encoding, data source or checkpoint: the message says what to change."""


__all__ = ["FinetuneError"]
