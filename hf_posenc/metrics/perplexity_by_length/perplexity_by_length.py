"""evaluate metric: sliding-window perplexity of a model at several context lengths.

Wraps ``hf_posenc.evaluation.perplexity_by_length``; the texts are the ``predictions``
(as in evaluate's own ``perplexity`` metric), the model and tokenizer are objects passed to
``compute``.
"""
import datasets
import evaluate

from hf_posenc.evaluation.perplexity import perplexity_by_length

_DESCRIPTION = """Sliding-window perplexity (Press et al.) at each window length: windows of L tokens
advanced by a stride (default L); only documents with at least L tokens are used at length L.
Loss in fp32. The model and tokenizer are passed to compute()."""

_CITATION = """@inproceedings{press2022train,
  title={Train Short, Test Long: Attention with Linear Biases Enables Input Length Extrapolation},
  author={Press, Ofir and Smith, Noah A. and Lewis, Mike}, booktitle={ICLR}, year={2022}}"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the documents.
    model: a causal LM (transformers PreTrainedModel, possibly patched by hf_posenc).
    tokenizer: its tokenizer.
    lengths (list of int): window lengths in tokens.
    stride (int, optional): window advance; default each length (non-overlapping windows).
    batch_size (int), max_documents (int), max_windows_per_document (int), add_bos (bool), progress (bool).
Returns:
    lengths, perplexities (None where no document is long enough), nll, tokens_scored, windows,
    documents_used, documents_skipped, seconds: lists aligned with lengths; details: the full result dict.
Examples:
    >>> ppl = evaluate.load(hf_posenc.metrics.path("perplexity_by_length"))  # doctest: +SKIP
    >>> ppl.compute(predictions=texts, model=model, tokenizer=tok, lengths=[512, 1024])  # doctest: +SKIP
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PerplexityByLength(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
            reference_urls=["https://arxiv.org/abs/2108.12409"],
        )

    def _compute(self, predictions, model=None, tokenizer=None, lengths=None, stride=None, batch_size=1,
                 max_documents=None, max_windows_per_document=None, add_bos=False, progress=False):
        if model is None or tokenizer is None or not lengths:
            raise ValueError("perplexity_by_length needs compute(..., model=..., tokenizer=..., lengths=[...])")
        result = perplexity_by_length(
            model, tokenizer, list(predictions), lengths, stride=stride, batch_size=batch_size,
            max_documents=max_documents, max_windows_per_document=max_windows_per_document, add_bos=add_bos,
            progress=progress)
        rows = result.lengths
        return {
            "lengths": [r.length for r in rows],
            "perplexities": [r.perplexity for r in rows],
            "nll": [r.nll for r in rows],
            "tokens_scored": [r.tokens_scored for r in rows],
            "windows": [r.windows for r in rows],
            "documents_used": [r.documents_used for r in rows],
            "documents_skipped": [r.documents_skipped for r in rows],
            "seconds": [r.seconds for r in rows],
            "details": result.to_dict(),
        }
