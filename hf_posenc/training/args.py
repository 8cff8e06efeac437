"""Command-line arguments of the fine-tuning script (``scripts/finetune.py`` / ``hf-posenc finetune``).

``build_parser()`` builds the ``argparse`` parser; ``parse_args(argv)`` parses and checks it and
returns the namespace the training loop reads. Nothing here imports torch, so ``--help`` is fast.
"""
from __future__ import annotations

import argparse
import os
from typing import Sequence

from ..argtypes import int_at_least, int_list
from .errors import FinetuneError

DESCRIPTION = """\
Fine-tune a Hugging Face model after switching its positional encoding (--posenc) and/or
extending its context (--extend), with accelerate: one process here, DDP / FSDP / DeepSpeed on
clusters (the same script under `accelerate launch --config_file configs/accelerate/....yaml`
or `torchrun --nproc_per_node N`).
"""

EPILOG = """\
examples:
  # tiny run on the default corpus (the Python 3.11 docs), GPT-2 switched to ALiBi
  python scripts/finetune.py --model ./gpt2-tiny --posenc alibi --seq-len 256 --max-steps 200 \\
      --output-dir outputs/alibi
  # SmolLM2 (embedded), YaRN x2, PoSE up to 16k positions with 1k-token windows, LoRA
  python scripts/finetune.py --model smollm2 --extend yarn:factor=2 --pose --seq-len 1024 \\
      --pose-target-len 16384 --lora --lora-trainable embeddings,norms --bf16 --max-steps 30 \\
      --output-dir outputs/smollm2-yarn-pose
  # 2 processes on one machine (CPU: gloo; GPU: nccl)
  torchrun --nproc_per_node 2 scripts/finetune.py ...
  accelerate launch --config_file configs/accelerate/ddp.yaml scripts/finetune.py ...

The output directory receives metrics.jsonl (one line per optimizer step), loss_curve.png,
checkpoints/step-N (full accelerate state; a rerun with the same --output-dir resumes from the
latest one), final/ (the trained model, merged if LoRA, loadable by hf_posenc.from_pretrained,
with its tokenizer) and summary.json.
"""

LORA_TRAINABLE_GROUPS = ("embeddings", "norms", "positional")
RESUME_AUTO, RESUME_NONE = "auto", "none"


_positive_int = int_at_least(1)
_non_negative_int = int_at_least(0)
_int_list = int_list(2)


def _name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)

    g = p.add_argument_group("model and positional encoding")
    g.add_argument("--model", default="smollm2",
                   help="hub id, local directory (a plain or an hf_posenc-patched checkpoint), a .gguf file, or "
                        "'smollm2' for the embedded SmolLM2-135M-Instruct (default: %(default)s)")
    g.add_argument("--tokenizer", default=None, help="tokenizer to use (default: the model's)")
    g.add_argument("--from-scratch", action="store_true",
                   help="initialise the weights randomly from the model's config (train from scratch); "
                        "--model may then be a directory holding only config.json and the tokenizer")
    g.add_argument("--posenc", metavar="NAME[:k=v,...]", default=None,
                   help="switch to this positional encoding first (see `hf-posenc list`), e.g. alibi, "
                        "rope:theta=1e4, t5:num_buckets=32")
    g.add_argument("--extend", metavar="METHOD[:k=v,...]", default=None,
                   help="then extend the context with hf_posenc.extend_context; the length is given as "
                        "factor=F or max_length=N, e.g. yarn:factor=2, interpolate:max_length=1024, "
                        "self_extend:factor=4,window=512")
    g.add_argument("--objective", choices=("clm", "mlm"), default="clm",
                   help="clm: next-token prediction (decoders); mlm: masked LM for BERT-style encoders, "
                        "15%% of tokens masked (80/10/10) deterministically per seed and sample (default: clm)")
    g.add_argument("--mlm-probability", type=float, default=0.15, help="masking rate of --objective mlm")
    g.add_argument("--attn-implementation", default="sdpa", choices=("sdpa", "eager"),
                   help="attention implementation the model is loaded with (default: %(default)s)")

    g = p.add_argument_group("data")
    g.add_argument("--train-files", action="append", metavar="PATHS", default=None,
                   help="local training files: comma-separated paths, globs or directories (repeatable); "
                        ".txt = one document per file, .json/.jsonl/.csv/.parquet/.arrow = one per row of "
                        "--text-column")
    g.add_argument("--dataset", metavar="NAME_OR_PATH[:SPLIT]", default=None,
                   help="a `datasets` dataset: a directory written by save_to_disk or a load_dataset name/path "
                        "(split default: train)")
    g.add_argument("--text-column", default="text", help="column holding the text (default: %(default)s)")
    g.add_argument("--max-documents", type=_positive_int, default=None,
                   help="read at most this many documents (before the eval hold-out)")
    g.add_argument("--max-train-tokens", type=_positive_int, default=None,
                   help="bound data preparation: tokenise training documents only until about this many tokens "
                        "(8 characters per token assumed) and keep at most this many packed tokens")
    g.add_argument("--eval-documents", type=_non_negative_int, default=4,
                   help="documents held out (randomly, by --seed) for evaluation (default: %(default)s)")
    g.add_argument("--seq-len", type=_positive_int, default=512,
                   help="tokens per training sequence; documents are packed, separated by EOS (default: %(default)s)")
    g.add_argument("--cache-dir", default=None,
                   help="cache of the tokenised/packed data (datasets.map); default: OUTPUT_DIR/data_cache")
    g.add_argument("--preprocessing-workers", type=_positive_int, default=1, help="num_proc of datasets.map")

    g = p.add_argument_group("PoSE (positional skip-wise training)")
    g.add_argument("--pose", action="store_true",
                   help="train on --seq-len token windows whose position ids are split into chunks with random "
                        "skips so that they cover --pose-target-len positions (Zhu et al. 2023); needs an encoding "
                        "that reads position_ids (Llama-family rotary, absolute tables)")
    g.add_argument("--pose-target-len", type=_positive_int, default=None,
                   help="the position range to cover (default: the max_length of --extend)")
    g.add_argument("--pose-chunks", type=_positive_int, default=2, help="chunks per window (default: %(default)s)")

    g = p.add_argument_group("LoRA (peft)")
    g.add_argument("--lora", action="store_true", help="train LoRA adapters (merged into the saved model)")
    g.add_argument("--lora-r", type=_positive_int, default=8, help="LoRA rank (default: %(default)s)")
    g.add_argument("--lora-alpha", type=float, default=16.0, help="LoRA alpha (default: %(default)s)")
    g.add_argument("--lora-dropout", type=float, default=0.0, help="LoRA dropout (default: %(default)s)")
    g.add_argument("--lora-targets", type=_name_list, default=None,
                   help="comma-separated module names to adapt (default per family: Llama q_proj,k_proj,v_proj,"
                        "o_proj; GPT-2 attn.c_attn,attn.c_proj; BERT query,key,value)")
    g.add_argument("--lora-trainable", type=_name_list, default=[],
                   help="LongLoRA-style: also train these full parameter groups, comma-separated from "
                        f"{','.join(LORA_TRAINABLE_GROUPS)}")

    g = p.add_argument_group("optimisation")
    g.add_argument("--max-steps", type=_positive_int, default=100, help="optimizer steps (default: %(default)s)")
    g.add_argument("--batch-size", type=_positive_int, default=4,
                   help="sequences per micro-batch per process (default: %(default)s)")
    g.add_argument("--grad-accum", type=_positive_int, default=1,
                   help="micro-batches per optimizer step (accelerator.accumulate; default: %(default)s)")
    g.add_argument("--lr", type=float, default=1e-4, help="peak learning rate of AdamW (default: %(default)s)")
    g.add_argument("--lr-schedule", choices=("cosine", "linear", "constant"), default="cosine",
                   help="decay after warm-up (default: %(default)s)")
    g.add_argument("--warmup-steps", type=_non_negative_int, default=0, help="linear warm-up steps")
    g.add_argument("--weight-decay", type=float, default=0.0,
                   help="AdamW weight decay (not applied to biases and norms; default: %(default)s)")
    g.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping, 0 = off (default: %(default)s)")
    g.add_argument("--bf16", action="store_true",
                   help="bf16 mixed precision (accelerate autocast; fp32 master weights), on CPU or GPU")
    g.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in backward")
    g.add_argument("--seed", type=int, default=0, help="seed of init, data order, masking and PoSE (default: 0)")

    g = p.add_argument_group("evaluation, checkpoints and logging")
    g.add_argument("--output-dir", default="outputs/finetune", help="where everything is written (default: %(default)s)")
    g.add_argument("--eval-every", type=_non_negative_int, default=0,
                   help="evaluate every N optimizer steps and at the end (0 = only at the end if --eval-lengths "
                        "is given)")
    g.add_argument("--eval-lengths", type=_int_list, default=None,
                   help="comma-separated window lengths of the held-out perplexity "
                        "(hf_posenc.evaluation.perplexity_by_length; default: --seq-len)")
    g.add_argument("--eval-max-documents", type=_positive_int, default=4,
                   help="held-out documents per eval length (default: %(default)s)")
    g.add_argument("--eval-max-windows", type=_positive_int, default=1,
                   help="windows per held-out document (default: %(default)s)")
    g.add_argument("--save-every", type=_non_negative_int, default=0,
                   help="save a full checkpoint (model, optimizer, scheduler, RNG, data position) every N steps")
    g.add_argument("--save-total-limit", type=_positive_int, default=2, help="checkpoints kept (default: %(default)s)")
    g.add_argument("--resume-from", default=RESUME_AUTO,
                   help="a checkpoint directory to resume from; 'auto' (default): the latest complete checkpoint in "
                        "OUTPUT_DIR/checkpoints if any; 'none': start afresh")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")

    g = p.add_argument_group("distributed and debugging")
    g.add_argument("--cpu", action="store_true",
                   help="train on the CPU even if a GPU is present (several processes on a machine without GPU use "
                        "the CPU anyway: gloo, MULTI_CPU)")
    g.add_argument("--ddp-find-unused-parameters", action="store_true",
                   help="DDP find_unused_parameters=True (parameters that get no gradient in some steps)")
    g.add_argument("--log-samples", action="store_true",
                   help="debug: write the training sample indices each process consumed to "
                        "OUTPUT_DIR/samples_rank{R}.jsonl")
    g.add_argument("--stop-after", type=_positive_int, default=None,
                   help="debug: stop after this optimizer step as if killed (no final save), to test resuming")
    return p


def parse_args(argv: Sequence[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``); argparse errors exit with status 2."""
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    try:
        check_args(args)
    except FinetuneError as exc:
        parser.error(str(exc))
    return args


def check_args(args: argparse.Namespace) -> None:
    """Checks that need no model or data (the rest are in ``loop.run``)."""
    if args.train_files and args.dataset:
        raise FinetuneError("give --train-files or --dataset, not both")
    bad = sorted(set(args.lora_trainable) - set(LORA_TRAINABLE_GROUPS))
    if bad:
        raise FinetuneError(f"--lora-trainable: unknown group(s) {bad}; choose from {', '.join(LORA_TRAINABLE_GROUPS)}")
    if args.lora_trainable and not args.lora:
        raise FinetuneError("--lora-trainable only applies with --lora (without it every parameter is trained)")
    if args.pose_target_len is not None and not args.pose:
        raise FinetuneError("--pose-target-len needs --pose")
    if args.pose and args.pose_chunks > args.seq_len:
        raise FinetuneError(f"--pose-chunks ({args.pose_chunks}) cannot exceed --seq-len ({args.seq_len})")
    if args.pose and args.objective == "mlm":
        raise FinetuneError("--pose is for causal LM training (--objective clm)")
    if not 0.0 < args.mlm_probability < 1.0:
        raise FinetuneError(f"--mlm-probability must be in (0, 1), got {args.mlm_probability}")
    if args.objective == "mlm" and args.seq_len < 3:
        raise FinetuneError("--objective mlm needs --seq-len >= 3")
    if args.lr <= 0:
        raise FinetuneError(f"--lr must be > 0, got {args.lr}")
    if args.warmup_steps >= args.max_steps and args.warmup_steps > 0:
        raise FinetuneError(f"--warmup-steps ({args.warmup_steps}) must be below --max-steps ({args.max_steps})")
    if args.eval_every and args.eval_documents == 0:
        raise FinetuneError("--eval-every needs held-out documents (--eval-documents >= 1)")
    if args.resume_from not in (RESUME_AUTO, RESUME_NONE) and not os.path.isdir(args.resume_from):
        raise FinetuneError(f"--resume-from: no such checkpoint directory {args.resume_from!r}")
    if args.from_scratch and args.lora:
        raise FinetuneError("--lora adapts pretrained weights; it makes no sense with --from-scratch")


__all__ = ["build_parser", "parse_args", "check_args", "LORA_TRAINABLE_GROUPS", "RESUME_AUTO", "RESUME_NONE"]
