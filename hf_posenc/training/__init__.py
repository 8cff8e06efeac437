"""Fine-tuning with accelerate: switch the positional encoding and/or extend the context, then train.

    python scripts/finetune.py --model smollm2 --extend yarn:factor=2 --pose --seq-len 1024 --lora ...
    accelerate launch --config_file configs/accelerate/ddp.yaml scripts/finetune.py ...
    torchrun --nproc_per_node 2 scripts/finetune.py ...

or from Python: ``hf_posenc.training.main(["--model", "...", ...])`` (returns the exit status).
``python scripts/finetune.py --help`` lists every option; ``hf_posenc.training.args`` defines them,
``data`` prepares and streams the samples, ``pose`` makes PoSE position ids, ``model`` loads,
patches, wraps (LoRA) and saves, and ``loop`` trains, evaluates and checkpoints.
"""
from __future__ import annotations

import logging
import sys
from typing import Sequence

from .args import build_parser, parse_args
from .errors import FinetuneError

PROG = "finetune"


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run the fine-tuning command line; returns the exit status (0 ok, 2 bad input).

    ``--help`` and argument errors exit through argparse (``SystemExit``) as usual.
    """
    args = parse_args(argv, prog=prog)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("hf_posenc.training").setLevel(logging.INFO)
    from .loop import run

    try:
        return run(args)
    except FinetuneError as exc:
        print(f"{prog or PROG}: error: {exc}", file=sys.stderr)
        return 2


__all__ = ["main", "build_parser", "parse_args", "FinetuneError"]
