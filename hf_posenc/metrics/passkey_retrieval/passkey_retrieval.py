"""evaluate metric: pass-key retrieval accuracy (Mohtashami & Jaggi, 2023) by prompt length and depth.

Wraps ``hf_posenc.evaluation.passkey_retrieval``; the inputs are the prompt ``lengths``, the
model and tokenizer are objects passed to ``compute``.
"""
import datasets
import evaluate

from hf_posenc.evaluation.passkey import passkey_retrieval

_DESCRIPTION = """Pass-key retrieval: a 5-digit key hidden at a given depth of repeated filler text must be
completed greedily after "What is the pass key? The pass key is". Accuracy = exact match of the first
number generated. The model and tokenizer are passed to compute()."""

_CITATION = """@article{mohtashami2023landmark,
  title={Landmark Attention: Random-Access Infinite Context Length for Transformers},
  author={Mohtashami, Amirkeivan and Jaggi, Martin}, journal={arXiv:2305.16300}, year={2023}}"""

_KWARGS_DESCRIPTION = """
Args:
    lengths (list of int): prompt lengths in tokens (measured with the tokenizer).
    model: a causal LM with ``generate`` (possibly patched by hf_posenc).
    tokenizer: its tokenizer.
    depths (list of float): needle depths in [0, 1]; default 0, 0.25, 0.5, 0.75, 1.
    trials (int): prompts per (length, depth); default 10.
    seed (int): seed of the pass keys; max_new_tokens (int); progress (bool).
Returns:
    lengths, accuracy (mean over depths per length), depths, accuracy_by_depth ({length: [acc per depth]}),
    seconds (per length), details: the full result dict (every trial's key and output).
Examples:
    >>> keys = evaluate.load(hf_posenc.metrics.path("passkey_retrieval"))  # doctest: +SKIP
    >>> keys.compute(lengths=[1024], model=model, tokenizer=tok, trials=2)  # doctest: +SKIP
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PasskeyRetrieval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"lengths": datasets.Value("int64")}),
            reference_urls=["https://arxiv.org/abs/2305.16300"],
        )

    def _compute(self, lengths, model=None, tokenizer=None, depths=(0.0, 0.25, 0.5, 0.75, 1.0), trials=10, seed=0,
                 max_new_tokens=10, progress=False):
        if model is None or tokenizer is None:
            raise ValueError("passkey_retrieval needs compute(lengths=[...], model=..., tokenizer=...)")
        result = passkey_retrieval(model, tokenizer, [int(n) for n in lengths], depths=depths, trials=trials,
                                   seed=seed, max_new_tokens=max_new_tokens, progress=progress)
        return {
            "lengths": result.lengths,
            "accuracy": [result.mean_accuracy(n) for n in result.lengths],
            "depths": result.depths,
            "accuracy_by_depth": {str(n): [result.accuracy(n, d) for d in result.depths] for n in result.lengths},
            "seconds": [result.seconds_at(n) for n in result.lengths],
            "details": result.to_dict(),
        }
