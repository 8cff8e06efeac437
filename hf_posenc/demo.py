"""``hf-posenc demo``: the main job. Does context extension help a real pretrained model?

On the embedded SmolLM2-135M (trained at 8192 tokens, bf16 on CPU) it compares the model as
shipped against training-free extensions (YaRN, NTK, Self-Extend) at 8k and 16k tokens:
perplexity on long real documents (the Python 3.11 docs) and pass-key retrieval at the
longest length. Without extension a RoPE model is expected to collapse past its trained
length; the extensions should keep it usable. The run prints the table and writes
results.json/.md and PNG plots.

    hf-posenc demo                         # 11.6 minutes measured on 2 idle CPU cores
    hf-posenc demo --quick                 # a 1-2 minute smoke run at short lengths
    hf-posenc demo --methods yarn --lengths 8192,16384 --trials 2 --out outputs/demo
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Sequence

DEFAULT_METHODS = "yarn,ntk,self_extend"
TRAINED = 8192  # SmolLM2-135M's training length; used only to pick the extension factor


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.description = __doc__
    p.add_argument("--model", default=None, help="hub id or local path (default: the embedded SmolLM2-135M)")
    p.add_argument("--methods", default=DEFAULT_METHODS,
                   help=f"comma list of extend_context methods compared with no extension (default {DEFAULT_METHODS})")
    p.add_argument("--lengths", default="8192,16384", help="evaluation lengths in tokens (default 8192,16384)")
    p.add_argument("--trained-length", type=int, default=None,
                   help=f"the model's trained length (default: from its config; {TRAINED} for SmolLM2)")
    p.add_argument("--passkey-lengths", default=None,
                   help="pass-key prompt lengths (default: the longest of --lengths; the shorter ones are "
                        "the trained-length control for perplexity)")
    p.add_argument("--trials", type=int, default=1, help="pass-key prompts per (length, depth) (default 1)")
    p.add_argument("--depths", default="0.5", help="pass-key depths (default 0.5: one prompt per length)")
    p.add_argument("--max-documents", type=int, default=1, help="documents per length for perplexity (default 1)")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"],
                   help="weights dtype (default bfloat16: ~3x faster than float32 on CPU)")
    p.add_argument("--no-passkey", action="store_true", help="perplexity only")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: lengths 256,512, one pass-key prompt at 512 (about a minute)")
    p.add_argument("--out", default="outputs/demo", help="output directory (default outputs/demo)")
    return p


def eval_argv(args) -> list[str]:
    """The ``hf-posenc eval`` command line this demo runs."""
    lengths = "256,512" if args.quick else args.lengths
    longest = max(int(x) for x in lengths.split(","))
    trained = args.trained_length or TRAINED
    factor = max(2.0, math.ceil(longest / trained * 100) / 100)  # at least 2: every method needs factor > 1
    argv = ["--lengths", lengths, "--max-documents", str(args.max_documents), "--max-windows", "1",
            "--dtype", args.dtype, "--out", args.out, "--seed", "0"]
    if args.model:
        argv += ["--model", args.model]
    if not args.no_passkey:
        argv += ["--passkey", "--trials", str(1 if args.quick else args.trials),
                 "--depths", "0.5" if args.quick else args.depths]
        if args.quick:
            argv += ["--passkey-lengths", "512", "--max-new-tokens", "8"]
        else:
            argv += ["--passkey-lengths", args.passkey_lengths or str(longest)]
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        opts = f"factor={factor}"
        if args.trained_length:
            opts += f",original_max_length={args.trained_length}"
        argv += ["--extend", f"{method}:{opts}"]
    return argv


def run(args: argparse.Namespace) -> int:
    from .evaluation.command import main as eval_main

    argv = eval_argv(args)
    print("hf-posenc demo: running hf-posenc eval " + " ".join(argv), file=sys.stderr, flush=True)
    return eval_main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    return run(add_arguments(argparse.ArgumentParser(prog="hf-posenc demo")).parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
