#!/usr/bin/env python
"""Fine-tune a model after switching its positional encoding / extending its context.

    python scripts/finetune.py --help
    python scripts/finetune.py --model smollm2 --extend yarn:factor=2 --pose --seq-len 1024 --lora ...
    accelerate launch --config_file configs/accelerate/ddp.yaml scripts/finetune.py ...
    torchrun --nproc_per_node 2 scripts/finetune.py ...

A thin wrapper around ``hf_posenc.training.main`` (also ``hf-posenc finetune``).
"""
import os
import sys

try:
    import hf_posenc  # noqa: F401
except ImportError:  # run from a checkout without installing: use the repository's package
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_posenc.training import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="finetune.py"))
