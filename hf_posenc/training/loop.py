"""The accelerate training loop: optimizer steps over ``--grad-accum`` micro-batches, metrics,
evaluation, checkpoints and resuming, and the final save.

Output directory layout::

    metrics.jsonl            one line per optimizer step (step, loss, lr, tokens, tokens_per_s, world_size, ...)
    loss_curve.png           training loss by step (eval perplexities in a second panel when evaluated)
    checkpoints/step-N/      accelerator.save_state (model, optimizer, scheduler, RNG) + trainer_state.json
    final/                   save_pretrained of the trained model (LoRA merged) + tokenizer
    summary.json             the run's figures
    samples_rank{R}.jsonl    (--log-samples) the stream positions and blocks each process consumed
    data_cache/              tokenised and packed data (datasets.map cache files)

A checkpoint directory is written as ``step-N.tmp`` and renamed once complete (its
trainer_state.json last), so a run killed while saving leaves no half checkpoint behind: the
next run resumes from the latest complete one, truncates metrics.jsonl to it and replays the
same data, masks, dropout and updates.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import time
from typing import Any

import torch

from .data import BatchMaker, SampleStream, prepare_data
from .errors import FinetuneError
from .model import add_lora, check_lengths, extension_length, load_model, save_final, trainable_summary
from .pose import check_pose_support

logger = logging.getLogger("hf_posenc.training")

STATE_FILE = "trainer_state.json"
CHECKPOINT_RE = re.compile(r"^step-(\d+)$")
# Arguments a resumed run must share with the checkpoint (they decide the data and the model).
RESUME_KEYS = ("model", "from_scratch", "posenc", "extend", "objective", "seq_len", "pose", "pose_target_len",
               "pose_chunks", "lora", "lora_r", "lora_targets", "lora_trainable", "seed", "train_files", "dataset",
               "max_documents", "max_train_tokens", "eval_documents", "mlm_probability")


# ------------------------------------------------------------------------------ checkpoints
def list_checkpoints(output_dir: str) -> list[tuple[int, str]]:
    """Complete checkpoints (those with a trainer_state.json) as (step, path), oldest first."""
    root = os.path.join(output_dir, "checkpoints")
    found = []
    if os.path.isdir(root):
        for name in os.listdir(root):
            m = CHECKPOINT_RE.match(name)
            path = os.path.join(root, name)
            if m and os.path.isfile(os.path.join(path, STATE_FILE)):
                found.append((int(m.group(1)), path))
    return sorted(found)


def read_state(path: str) -> dict[str, Any]:
    file = os.path.join(path, STATE_FILE)
    if not os.path.isfile(file):
        raise FinetuneError(f"--resume-from {path!r} is not a complete checkpoint (no {STATE_FILE})")
    with open(file) as f:
        return json.load(f)


def save_checkpoint(accelerator, output_dir: str, step: int, state: dict, keep: int) -> str:
    root = os.path.join(output_dir, "checkpoints")
    final, tmp = os.path.join(root, f"step-{step}"), os.path.join(root, f"step-{step}.tmp")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp, safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_json(os.path.join(tmp, STATE_FILE), state)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for _, old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=str)
        f.write("\n")
    os.replace(tmp, path)


def _run_config(args, world_size: int) -> dict[str, Any]:
    cfg = {k: v for k, v in vars(args).items() if k not in ("func",)}
    cfg["world_size"] = world_size
    cfg["global_batch"] = args.batch_size * args.grad_accum * world_size
    return cfg


def _check_resumable(saved: dict, args, world_size: int, path: str) -> None:
    old = saved.get("config", {})
    diffs = [f"{k}: checkpoint {old.get(k)!r} vs now {getattr(args, k)!r}" for k in RESUME_KEYS
             if k in old and old.get(k) != getattr(args, k)]
    if old.get("global_batch") != args.batch_size * args.grad_accum * world_size:
        diffs.append(f"global batch (batch-size x grad-accum x processes): checkpoint {old.get('global_batch')} vs now "
                     f"{args.batch_size * args.grad_accum * world_size}")
    if diffs:
        raise FinetuneError(f"cannot resume from {path}: the run differs from the checkpoint's ({'; '.join(diffs)}); "
                            f"use another --output-dir or --resume-from none")


# ------------------------------------------------------------------------------ metrics
class MetricsLog:
    """metrics.jsonl, one JSON object per optimizer step (main process only)."""

    def __init__(self, path: str, enabled: bool):
        self.path, self.enabled = path, enabled

    def truncate_after(self, step: int) -> None:
        """Drop lines of steps after ``step`` (a killed run may have logged past its last checkpoint)."""
        if not self.enabled or not os.path.isfile(self.path):
            return
        keep = [line for line in self.read_lines() if line.get("step", 0) <= step]
        with open(self.path, "w") as f:
            for line in keep:
                f.write(json.dumps(line) + "\n")

    def read_lines(self) -> list[dict]:
        out = []
        if os.path.isfile(self.path):
            with open(self.path) as f:
                for raw in f:
                    raw = raw.strip()
                    if raw:
                        try:
                            out.append(json.loads(raw))
                        except json.JSONDecodeError:  # a line cut by a kill
                            continue
        return out

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()


def plot_loss(metrics_path: str, png_path: str) -> None:
    """The loss curve (and eval perplexities, if any) of metrics.jsonl as a PNG."""
    lines = MetricsLog(metrics_path, True).read_lines()
    if not lines:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = [(line["step"], line["eval"]) for line in lines if line.get("eval")]
    fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(11 if evals else 6.5, 4), squeeze=False)
    ax = axes[0][0]
    steps, losses = [line["step"] for line in lines], [line["loss"] for line in lines]
    ax.plot(steps, losses, lw=1, alpha=0.5, label="loss")
    if len(losses) >= 10:
        k = max(2, len(losses) // 20)
        smooth = [sum(losses[max(0, i - k + 1):i + 1]) / len(losses[max(0, i - k + 1):i + 1]) for i in range(len(losses))]
        ax.plot(steps, smooth, lw=2, label=f"mean of {k}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    if evals:
        ax = axes[0][1]
        lengths = sorted({int(n) for _, e in evals for n in e})
        for n in lengths:
            pts = [(s, e[str(n)]) for s, e in evals if e.get(str(n)) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=f"L={n}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("held-out perplexity")
        ax.set_yscale("log")
        ax.set_title("evaluation")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------ evaluation
def evaluate(accelerator, model, tokenizer, data, args, lengths: list[int], batch_maker) -> dict[str, float | None]:
    """Held-out perplexity per length: sliding-window causal perplexity (clm) or masked-LM
    perplexity (mlm). Sharded runs (FSDP, DeepSpeed) evaluate on every process; others on the main one."""
    if not data.eval_docs or not lengths:
        return {}
    sharded = accelerator.distributed_type.name in ("FSDP", "DEEPSPEED")
    result: dict[str, float | None] = {}
    if sharded or accelerator.is_main_process:
        target = model if sharded else accelerator.unwrap_model(model)
        with accelerator.autocast():
            if args.objective == "clm":
                from ..evaluation import perplexity_by_length

                res = perplexity_by_length(target, tokenizer, data.eval_docs, lengths,
                                           max_documents=args.eval_max_documents,
                                           max_windows_per_document=args.eval_max_windows, progress=False)
                result = {str(item.length): item.perplexity for item in res.lengths}
            else:
                result = _mlm_perplexity(target, data, args, lengths, batch_maker)
    accelerator.wait_for_everyone()
    return result


@torch.no_grad()
def _mlm_perplexity(model, data, args, lengths, batch_maker) -> dict[str, float | None]:
    from .data import special_layout

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, float | None] = {}
    for length in lengths:
        total, count = 0.0, 0
        _, prefix, suffix = special_layout(batch_maker.tokenizer, "mlm")
        body = length - len(prefix) - len(suffix)
        docs = [d for d in data.eval_docs if len(d) >= body][:args.eval_max_documents]
        for doc_i, doc in enumerate(docs):
            for w in range(min(args.eval_max_windows, len(doc) // body)):
                ids = torch.tensor(prefix + doc[w * body:(w + 1) * body] + suffix, dtype=torch.long)
                # fixed masks per (document, window), apart from the training stream's positions
                inputs, labels = batch_maker.mask(ids, -(doc_i * 100_000 + w + 1))
                logits = model(input_ids=inputs[None].to(device)).logits.float()
                keep = labels != -100
                total += torch.nn.functional.cross_entropy(logits[0][keep.to(device)], labels[keep].to(device),
                                                           reduction="sum").item()
                count += int(keep.sum())
        out[str(length)] = math.exp(total / count) if count else None
    if was_training:
        model.train()
    return out


# ------------------------------------------------------------------------------ the run
def _make_optimizer(model, args):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() or ".ln_" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=args.lr)


def _make_scheduler(optimizer, args):
    from transformers import get_scheduler

    name = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[args.lr_schedule]
    return get_scheduler(name, optimizer, num_warmup_steps=args.warmup_steps, num_training_steps=args.max_steps)


def _resolve_resume(args) -> str | None:
    if args.resume_from == "none":
        return None
    if args.resume_from != "auto":
        return args.resume_from
    found = list_checkpoints(args.output_dir)
    return found[-1][1] if found else None


def _reset_accelerate_singletons() -> None:
    """Allow another run in the same process (tests, notebooks) with other accelerate settings.
    Only in a single-process setting: distributed process groups are left alone."""
    from accelerate.state import AcceleratorState, GradientState

    if AcceleratorState._shared_state and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()


def _has_accelerator() -> bool:
    if torch.cuda.is_available():
        return True
    acc = getattr(torch, "accelerator", None)
    return bool(acc is not None and acc.is_available())


def run(args) -> int:
    """Train as ``args`` says (see ``args.build_parser``); returns the exit status."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    _reset_accelerate_singletons()
    launched_world = int(os.environ.get("WORLD_SIZE", "1"))
    accelerator = Accelerator(
        # On a machine without an accelerator, accelerate treats a torchrun launch as one process each
        # unless told to use the CPU: then it is MULTI_CPU (gloo).
        cpu=args.cpu or (launched_world > 1 and not _has_accelerator()),
        gradient_accumulation_steps=args.grad_accum,
        mixed_precision="bf16" if args.bf16 else None,  # None: accelerate config / environment, default no
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=args.ddp_find_unused_parameters)],
    )
    main, rank, world = accelerator.is_main_process, accelerator.process_index, accelerator.num_processes
    if world != launched_world:
        raise FinetuneError(f"launched as {launched_world} processes (WORLD_SIZE) but accelerate set up {world} "
                            f"({accelerator.distributed_type.value}); check the launcher and its config")
    say = accelerator.print
    os.makedirs(args.output_dir, exist_ok=True)
    accelerator.wait_for_everyone()
    set_seed(args.seed)

    # -- model, encoding, extension
    model, tokenizer = load_model(args)
    pose_target = None
    if args.pose:
        check_pose_support(model)
        pose_target = args.pose_target_len or extension_length(model)
        if pose_target is None:
            raise FinetuneError("--pose needs --pose-target-len (or --extend, whose max_length is the default target)")
        if pose_target < args.seq_len:
            raise FinetuneError(f"--pose-target-len ({pose_target}) must be at least --seq-len ({args.seq_len})")
    eval_lengths = args.eval_lengths or ([args.seq_len] if args.eval_every else [])
    check_lengths(model, args, pose_target or args.seq_len, eval_lengths)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if args.lora:
        model = add_lora(model, args)
    sizes = trainable_summary(model)

    # -- data
    data = prepare_data(args, tokenizer, accelerator)
    stream = SampleStream(data, seed=args.seed, batch_size=args.batch_size, world_size=world, rank=rank)
    vocab = min(len(tokenizer), model.config.vocab_size) if hasattr(model, "config") else len(tokenizer)
    batch_maker = BatchMaker(args, tokenizer, vocab, pose_target)
    if eval_lengths and not data.eval_docs:
        logger.warning("no held-out documents: evaluation skipped")
    if data.num_blocks < stream.global_batch * args.grad_accum:
        logger.warning("only %d training blocks for a global batch of %d: samples repeat within a step",
                       data.num_blocks, stream.global_batch * args.grad_accum)

    # -- optimisation
    optimizer = _make_optimizer(model, args)
    scheduler = _make_scheduler(optimizer, args)
    optimizer_steps = [0]
    optimizer.register_step_post_hook(lambda *_: optimizer_steps.__setitem__(0, optimizer_steps[0] + 1))
    model, optimizer = accelerator.prepare(model, optimizer)
    # Stepped by hand once per optimizer step (accelerate's prepared scheduler steps num_processes times).
    accelerator.register_for_checkpointing(scheduler)

    metrics = MetricsLog(os.path.join(args.output_dir, "metrics.jsonl"), main)
    png = os.path.join(args.output_dir, "loss_curve.png")
    start_step, tokens_seen, resumed_from = 0, 0, None
    resume = _resolve_resume(args)
    if resume is not None:
        saved = read_state(resume)
        _check_resumable(saved, args, world, resume)
        accelerator.load_state(resume)
        start_step, tokens_seen, resumed_from = saved["step"], saved["tokens"], resume
        optimizer_steps[0] = saved.get("optimizer_steps", saved["step"])
        metrics.truncate_after(start_step)
        say(f"resumed from {resume} at step {start_step} ({saved['samples_consumed']} samples consumed)")
    elif main and os.path.isfile(metrics.path):
        os.remove(metrics.path)  # a fresh run: start a fresh log
    if args.log_samples:
        sample_log = os.path.join(args.output_dir, f"samples_rank{rank}.jsonl")
        if resume is None and os.path.exists(sample_log):
            os.remove(sample_log)
        else:
            _truncate_jsonl(sample_log, start_step)

    say(f"finetune: {world} process(es) ({accelerator.distributed_type.value}), {sizes['trainable_parameters']:,} of "
        f"{sizes['parameters']:,} parameters trainable, {data.num_blocks} blocks of {args.seq_len} tokens from "
        f"{data.info['train_documents']} documents ({data.info['eval_documents']} held out), global batch "
        f"{stream.global_batch * args.grad_accum} sequences"
        + (f", PoSE positions up to {pose_target}" if pose_target else ""))
    _write_json_main(main, os.path.join(args.output_dir, "run_config.json"),
                     {"args": _run_config(args, world), "data": data.info, "model": sizes,
                      "posenc": getattr(accelerator.unwrap_model(model).config, "posenc", None)})

    tokens_per_step = stream.global_batch * args.grad_accum * args.seq_len
    bar = tqdm(total=args.max_steps, initial=start_step, desc="finetune", unit="step",
               disable=not main or args.no_progress, dynamic_ncols=True)
    model.train()
    train_time, stopped, last_loss = 0.0, False, None
    first_loss = None
    micro = start_step * args.grad_accum
    for step in range(start_step + 1, args.max_steps + 1):
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=accelerator.device)
        lr = optimizer.param_groups[0]["lr"]
        grad_norm = None
        for _ in range(args.grad_accum):
            positions = stream.positions(micro)
            indices, ids = stream.blocks(positions)
            batch = {k: v.to(accelerator.device) for k, v in batch_maker(ids, positions).items()}
            if args.log_samples:
                _append_jsonl(os.path.join(args.output_dir, f"samples_rank{rank}.jsonl"),
                              {"step": step, "micro_step": micro, "rank": rank, "positions": positions,
                               "blocks": indices})
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach().float()
            micro += 1
        if not accelerator.sync_gradients:  # cannot happen: micro-steps are counted per optimizer step
            raise RuntimeError("gradient accumulation out of step with the optimizer")
        scheduler.step()
        step_loss = accelerator.reduce(loss_sum / args.grad_accum, reduction="mean").item()
        dt = time.perf_counter() - t0
        train_time += dt
        tokens_seen += tokens_per_step
        record = {"step": step, "loss": step_loss, "lr": lr, "tokens": tokens_seen,
                  "tokens_per_s": tokens_per_step / dt, "step_time_s": dt, "world_size": world,
                  "micro_steps": micro, "optimizer_steps": optimizer_steps[0],
                  "samples_consumed": micro * stream.global_batch}
        if grad_norm is not None:
            record["grad_norm"] = float(grad_norm)
        if not math.isfinite(step_loss):
            raise FinetuneError(f"loss is {step_loss} at step {step}; lower --lr or check the data")
        first_loss = step_loss if first_loss is None else first_loss
        last_loss = step_loss
        if eval_lengths and ((args.eval_every and step % args.eval_every == 0) or step == args.max_steps):
            record["eval"] = evaluate(accelerator, model, tokenizer, data, args, eval_lengths, batch_maker)
            model.train()
        metrics.write(record)
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}", tok_s=f"{tokens_per_step / dt:,.0f}", lr=f"{lr:.2e}")
        if args.save_every and step % args.save_every == 0:
            state = {"step": step, "micro_steps": micro, "samples_consumed": micro * stream.global_batch,
                     "tokens": tokens_seen, "optimizer_steps": optimizer_steps[0], "world_size": world,
                     "loss": step_loss, "config": _run_config(args, world), "time": time.time()}
            save_checkpoint(accelerator, args.output_dir, step, state, args.save_total_limit)
            if main:
                plot_loss(metrics.path, png)
        if args.stop_after is not None and step >= args.stop_after and step < args.max_steps:
            stopped = True
            break
    bar.close()
    if stopped:
        say(f"stopped after step {args.stop_after} (--stop-after): no final save")
        accelerator.end_training()
        return 0

    final_dir = os.path.join(args.output_dir, "final")
    save_final(accelerator, model, tokenizer, final_dir, args.lora, args.gradient_checkpointing)
    summary = {}
    if main:
        plot_loss(metrics.path, png)
        lines = metrics.read_lines()
        steps_now = args.max_steps - start_step
        summary = {
            "steps": args.max_steps, "world_size": world, "distributed_type": accelerator.distributed_type.value,
            "first_loss": lines[0]["loss"] if lines else first_loss,
            "final_loss": lines[-1]["loss"] if lines else last_loss,
            "tokens": tokens_seen, "tokens_per_step": tokens_per_step,
            "mean_tokens_per_s_this_session": tokens_per_step * steps_now / train_time if train_time else None,
            "train_time_s_this_session": train_time, "resumed_from": resumed_from,
            "final_eval": next((line["eval"] for line in reversed(lines) if line.get("eval")), None),
            "final_model": final_dir, "data": data.info, "model": sizes,
        }
        _write_json(os.path.join(args.output_dir, "summary.json"), summary)
        loss_text = (f"loss {summary['first_loss']:.4f} -> {summary['final_loss']:.4f}, "
                     if summary["first_loss"] is not None and summary["final_loss"] is not None else "")
        say(f"done: {loss_text}{summary['mean_tokens_per_s_this_session'] or 0:,.0f} tokens/s, "
            f"model saved to {final_dir}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return 0


def _write_json_main(main: bool, path: str, obj: Any) -> None:
    if main:
        _write_json(path, obj)


def _append_jsonl(path: str, obj: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(obj) + "\n")


def _truncate_jsonl(path: str, step: int) -> None:
    if not os.path.isfile(path):
        return
    keep = []
    with open(path) as f:
        for raw in f:
            try:
                line = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if line.get("step", 0) <= step:
                keep.append(line)
    with open(path, "w") as f:
        for line in keep:
            f.write(json.dumps(line) + "\n")


__all__ = ["run", "list_checkpoints", "read_state", "plot_loss", "MetricsLog", "evaluate"]
