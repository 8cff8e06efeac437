"""Measure context-length behaviour: sliding-window perplexity and pass-key retrieval.

    from hf_posenc.evaluation import perplexity_by_length, passkey_retrieval, load_texts
    ppl = perplexity_by_length(model, tokenizer, load_texts(), [1024, 2048, 4096], max_documents=2)
    keys = passkey_retrieval(model, tokenizer, [4096, 8192], trials=2)
    print(ppl.to_markdown(), keys.to_markdown())

The command line is ``hf-posenc eval`` (``hf_posenc.evaluation.command``); ``evaluate`` metric
modules live in ``hf_posenc.metrics``.
"""
from .corpus import default_corpus_files, load_texts
from .passkey import build_passkey_prompt, passkey_retrieval
from .perplexity import perplexity_by_length, tokenize_documents, window_plan
from .plots import plot_passkey, plot_perplexity, save_plots
from .results import (
    EvaluationReport, LengthPerplexity, PasskeyCell, PasskeyResult, PerplexityResult, VariantResult,
)

__all__ = [
    "perplexity_by_length", "passkey_retrieval", "build_passkey_prompt", "tokenize_documents", "window_plan",
    "load_texts", "default_corpus_files", "plot_perplexity", "plot_passkey", "save_plots",
    "EvaluationReport", "VariantResult", "PerplexityResult", "LengthPerplexity", "PasskeyResult", "PasskeyCell",
]
