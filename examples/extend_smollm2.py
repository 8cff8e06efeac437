"""Context extension on a real pretrained model: SmolLM2-135M (trained at 8192 tokens).

Runs the evaluation toolkit (`hf-posenc eval`) on the embedded SmolLM2-135M-Instruct in bf16
for the model as shipped and for each training-free extension method, at lengths past the
trained 8k: sliding-window perplexity on long real documents (the Python 3.11 docs) and
pass-key retrieval. Writes results.json, results.md and PNG plots to --out.

    python examples/extend_smollm2.py                         # everything: about 8 hours on 2 CPU cores
    python examples/extend_smollm2.py --lengths 8192,16384 --trials 2 --out outputs/extend

On 2 CPU cores one 8k / 16k / 32k forward takes about 20 / 70 / 275 s, and each pass-key prompt
is one such forward, so a long run is best split in parts and the parts joined with
``hf-posenc eval --merge part1,part2,... --out all``: split by method (``--methods yarn
--no-native --out part2``) or by length (``--no-perplexity --passkey-lengths 32768 --trials 1
--out part3`` adds pass key at 32k to the variants of earlier parts).

Expected from the literature: without extension the model collapses past 8k; YaRN, NTK and
Self-Extend keep pass-key retrieval high without training.
"""
from __future__ import annotations

import argparse
import sys

from hf_posenc.evaluation.command import main as eval_main

METHODS = ["linear", "ntk", "dynamic", "yarn", "self_extend"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", default="8192,16384,32768", help="evaluation lengths (default 8192,16384,32768)")
    p.add_argument("--passkey-lengths", default=None, help="pass-key lengths (default: --lengths)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"extension methods (default {','.join(METHODS)})")
    p.add_argument("--trials", type=int, default=2, help="pass-key prompts per (length, depth); 5 depths (default 2)")
    p.add_argument("--depths", default="0,0.25,0.5,0.75,1", help="pass-key depths")
    p.add_argument("--max-documents", type=int, default=2, help="documents per length for perplexity (default 2)")
    p.add_argument("--no-native", action="store_true", help="skip the model as shipped (for a run split in parts)")
    p.add_argument("--no-perplexity", action="store_true",
                   help="pass key only (e.g. a part that adds --passkey-lengths 32768 to earlier runs)")
    p.add_argument("--out", default="outputs/extend_smollm2", help="output directory")
    args = p.parse_args(argv)
    longest = max(int(x) for x in args.lengths.split(","))
    factor = max(2.0, longest / 8192)
    argv = ["--dtype", "bfloat16", "--lengths", args.lengths, "--max-documents", str(args.max_documents),
            "--max-windows", "1", "--passkey", "--trials", str(args.trials), "--depths", args.depths,
            "--out", args.out]
    if args.no_native:
        argv += ["--no-native"]
    if args.passkey_lengths:
        argv += ["--passkey-lengths", args.passkey_lengths]
    if args.no_perplexity:
        argv += ["--no-perplexity"]
    for method in args.methods.split(","):
        argv += ["--extend", f"{method}:factor={factor}"]
    print("running hf-posenc eval " + " ".join(argv), file=sys.stderr)
    return eval_main(argv)


if __name__ == "__main__":
    sys.exit(main())
