"""``hf-posenc eval``: perplexity by length and pass-key retrieval for several variants of a model.

    hf-posenc eval --lengths 1024,2048,4096 --posenc alibi --extend yarn:factor=4 --passkey --out outputs/x
    python -m hf_posenc.evaluation.command ...        # the same, without the cli wiring

Variants: ``native`` (the unmodified model) first, then one per ``--posenc`` and one per
``--extend``, each on a fresh deep copy of the loaded model. Writes ``results.json``,
``results.md`` and PNG plots to ``--out`` (after every variant, so partial runs keep results),
and prints the markdown tables. Exit status: 0 ok, 1 a variant failed, 2 bad arguments.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from typing import Sequence

from ..argtypes import fraction_list, int_at_least, int_list
from ..argtypes import variant as _variant
from ..variants import format_variant

DEFAULT_DEPTHS = "0,0.25,0.5,0.75,1"


_ints = int_list(1)
_positive = int_at_least(1)
_depths = fraction_list("depths")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``eval`` options to ``parser`` (a sub-command parser or a standalone one)."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    g = parser.add_argument_group("model and variants")
    g.add_argument("--model", default=None, metavar="ID_OR_PATH",
                   help="hub id, local directory or .gguf file (default: the embedded SmolLM2-135M-Instruct)")
    g.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16", "auto"],
                   help="weights dtype (default: the loader's, float32 for the embedded model); losses are fp32")
    g.add_argument("--posenc", action="append", default=[], type=_variant, metavar="NAME[:k=v,...]",
                   help="add a variant with this positional encoding (apply_posenc); repeatable; "
                        "e.g. alibi, rope:theta=1e6, nope (see `hf-posenc list`)")
    g.add_argument("--extend", action="append", default=[], type=_variant, metavar="METHOD[:k=v,...]",
                   help="add a variant extended with hf_posenc.extend_context(model, METHOD, **options); "
                        "repeatable; e.g. yarn:factor=4")
    g.add_argument("--no-native", action="store_true",
                   help="skip the unmodified model (e.g. to split a long run; join runs with --merge)")
    g.add_argument("--merge", default=None, metavar="DIR,DIR,...",
                   help="no model run: join the results.json of earlier runs into --out (distinct variants, or a "
                        "variant measured at distinct lengths in each run)")
    g = parser.add_argument_group("perplexity")
    g.add_argument("--lengths", type=_ints, default=None, metavar="N,N,...",
                   help="window lengths for sliding-window perplexity, e.g. 2048,4096 (required unless "
                        "--no-perplexity); also the default --passkey-lengths")
    g.add_argument("--no-perplexity", action="store_true", help="skip the perplexity measurement")
    g.add_argument("--texts", default=None, metavar="FILES_OR_DATASET",
                   help="comma-separated files/globs, a save_to_disk directory or a datasets name[:split] "
                        "('text' column); default: the Python 3.11 docs (apt-get install python3.11-doc)")
    g.add_argument("--max-documents", type=_positive, default=None, metavar="N",
                   help="at most N documents per length (the first long enough; default corpus: largest first)")
    g.add_argument("--max-windows", type=_positive, default=None, metavar="N",
                   help="at most N windows per document (1 = first LENGTH tokens of each document, as in YaRN)")
    g.add_argument("--stride", type=_positive, default=None, metavar="N",
                   help="window stride (default: the length, non-overlapping windows)")
    g.add_argument("--batch-size", type=_positive, default=1, metavar="N", help="windows per forward pass")
    g.add_argument("--add-bos", action="store_true", help="prepend the tokenizer's BOS to each document")
    g = parser.add_argument_group("pass-key retrieval")
    g.add_argument("--passkey", action="store_true", help="also run pass-key retrieval")
    g.add_argument("--passkey-lengths", type=_ints, default=None, metavar="N,N,...",
                   help="prompt lengths in tokens (default: --lengths)")
    g.add_argument("--depths", type=_depths, default=_depths(DEFAULT_DEPTHS), metavar="D,D,...",
                   help=f"needle depths as fractions of the filler (default: {DEFAULT_DEPTHS})")
    g.add_argument("--trials", type=_positive, default=10, metavar="N", help="prompts per (length, depth) (default 10)")
    g.add_argument("--max-new-tokens", type=_positive, default=10, metavar="N", help="greedy tokens generated")
    g.add_argument("--seed", type=int, default=0, help="seed of the pass keys (default 0)")
    g = parser.add_argument_group("output")
    g.add_argument("--out", required=True, metavar="DIR", help="directory for results.json, results.md and plots")
    g.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def _variants(args) -> list[dict]:
    out = [] if args.no_native else [{"name": "native", "posenc": None, "extend": None}]
    for name, options in args.posenc:
        out.append({"name": format_variant(name, options), "posenc": {"name": name, "options": options}, "extend": None})
    for method, options in args.extend:
        out.append({"name": "extend:" + format_variant(method, options), "posenc": None,
                    "extend": {"method": method, "options": options}})
    names = [v["name"] for v in out]
    if not out:
        raise ValueError("--no-native leaves no variant: add --posenc or --extend")
    if len(set(names)) != len(names):
        raise ValueError(f"variants given twice: {names}")
    return out


def _check_variants(model, variants: list[dict]) -> None:
    """Fail before any long run: apply (then remove) each encoding; extend a throw-away copy."""
    import hf_posenc

    for v in variants:
        if v["posenc"]:
            hf_posenc.apply_posenc(model, v["posenc"]["name"], **v["posenc"]["options"])  # ValueError if bad
            hf_posenc.remove_posenc(model)
        if v["extend"]:
            if not hasattr(hf_posenc, "extend_context"):
                raise ValueError("--extend needs hf_posenc.extend_context, which this hf_posenc does not have")
            del_me = _prepare(model, v)  # a copy: bad methods/options raise here, not after hours
            del del_me


def _prepare(model, variant: dict):
    import hf_posenc

    model = copy.deepcopy(model)
    if variant["posenc"]:
        hf_posenc.apply_posenc(model, variant["posenc"]["name"], **variant["posenc"]["options"])
    if variant["extend"]:
        hf_posenc.extend_context(model, variant["extend"]["method"], **variant["extend"]["options"])
    return model.eval()


def _length_hint(model, args, passkey_lengths) -> str:
    """Why a variant may have failed: a length beyond a learned position table."""
    table = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    longest = max((args.lengths or []) + ((passkey_lengths or []) if args.passkey else []), default=0)
    if table and longest > table:
        return (f" (the longest length asked, {longest}, exceeds the model's max_position_embeddings {table}; "
                f"absolute position tables fail beyond it)")
    return ""


def _write(report, out: str, plots: bool) -> None:
    report.save_json(os.path.join(out, "results.json"))
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write("# hf-posenc eval\n\n" + report.to_markdown())
    if plots:
        from .plots import save_plots

        save_plots(report, out)


def run(args: argparse.Namespace) -> int:
    """Run ``hf-posenc eval`` with parsed ``args``; returns the exit status."""
    try:
        return _run(args)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        print(f"hf-posenc eval: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    import torch
    import transformers

    import hf_posenc
    from ..default_model import load_model_and_tokenizer
    from .corpus import load_texts
    from .passkey import passkey_retrieval
    from .perplexity import perplexity_by_length
    from .results import EvaluationReport, VariantResult

    if args.merge:
        from .results import merge_reports

        dirs = [d for d in args.merge.split(",") if d]
        reports = []
        for d in dirs:
            path = os.path.join(d, "results.json")
            if not os.path.exists(path):
                raise FileNotFoundError(f"--merge: no results.json in {d!r}")
            reports.append(EvaluationReport.load_json(path))
        report = merge_reports(reports, sources=dirs)
        os.makedirs(args.out, exist_ok=True)
        _write(report, args.out, plots=not args.no_plots)
        print(report.to_markdown())
        return 0
    do_ppl = not args.no_perplexity
    if do_ppl and not args.lengths:
        raise ValueError("--lengths is required (or pass --no-perplexity with --passkey --passkey-lengths)")
    passkey_lengths = args.passkey_lengths or args.lengths
    if args.passkey and not passkey_lengths:
        raise ValueError("--passkey needs --passkey-lengths or --lengths")
    if not do_ppl and not args.passkey:
        raise ValueError("nothing to do: --no-perplexity without --passkey")
    variants = _variants(args)
    if args.texts is not None and not do_ppl:
        raise ValueError("--texts is only used for perplexity, which --no-perplexity skips")
    texts = load_texts(args.texts) if do_ppl else None  # before loading the model: fail fast
    os.makedirs(args.out, exist_ok=True)

    start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype)
    load_seconds = time.perf_counter() - start
    _check_variants(model, variants)
    report = EvaluationReport(metadata={
        "model": args.model or "embedded SmolLM2-135M-Instruct (GGUF)", "dtype": str(model.dtype),
        "texts": args.texts or "default corpus (python3.11-doc sources, largest first)",
        "documents": len(texts) if texts is not None else 0, "lengths": args.lengths,
        "stride": args.stride or "length", "max_documents": args.max_documents, "max_windows": args.max_windows,
        "passkey_lengths": passkey_lengths if args.passkey else None, "depths": args.depths,
        "trials": args.trials, "seed": args.seed, "threads": torch.get_num_threads(),
        "hf_posenc": hf_posenc.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "load_seconds": round(load_seconds, 1), "command": " ".join(sys.argv),
    })
    status = 0
    for v in variants:
        print(f"== variant {v['name']}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        result = VariantResult(name=v["name"], posenc=v["posenc"], extend=v["extend"])
        report.variants.append(result)
        try:
            vmodel = model if v["name"] == "native" else _prepare(model, v)
            if do_ppl:
                result.perplexity = perplexity_by_length(
                    vmodel, tokenizer, texts, args.lengths, stride=args.stride, batch_size=args.batch_size,
                    max_documents=args.max_documents, max_windows_per_document=args.max_windows,
                    add_bos=args.add_bos, progress=not args.no_progress)
            if args.passkey:
                result.passkey = passkey_retrieval(
                    vmodel, tokenizer, passkey_lengths, depths=args.depths, trials=args.trials, seed=args.seed,
                    max_new_tokens=args.max_new_tokens, progress=not args.no_progress)
            del vmodel
        except Exception as exc:  # noqa: BLE001 - one failing variant must not lose the others
            result.error = f"{type(exc).__name__}: {exc}" + _length_hint(model, args, passkey_lengths)
            print(f"hf-posenc eval: variant {v['name']} failed: {result.error}", file=sys.stderr)
            status = 1
        result.seconds = round(time.perf_counter() - t0, 3)
        report.metadata["total_seconds"] = round(time.perf_counter() - start, 1)
        _write(report, args.out, plots=not args.no_plots)
    print(report.to_markdown())
    print(f"results written to {os.path.abspath(args.out)}", file=sys.stderr)
    return status


def build_parser() -> argparse.ArgumentParser:
    return add_arguments(argparse.ArgumentParser(prog="hf-posenc eval"))


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
