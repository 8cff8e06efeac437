"""``hf-posenc compare``: the seed's A/B experiment, rerun by anyone in one command.

One small model per encoding is trained from scratch with everything else identical (size,
initial weights, tokenizer, data order, steps or wall-clock budget, optimizer, schedule) on
real text, then evaluated at several lengths, including lengths beyond the training length.

    hf-posenc compare --encodings sinusoidal,learned,rope,alibi,t5,nope --family gpt2 \\
        --train-len 128 --eval-lengths 128,256,512,1024 --steps 600 --out outputs/compare

Writes ``results.json``, ``results.md`` (encoding x length, training tokens/s, parameters),
``perplexity.png``, ``train_log.jsonl`` (every step: encoding, loss, and a hash of the batch,
which is how the tests assert that every encoding saw the same data in the same order).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from typing import Sequence

import torch

DEFAULT_ENCODINGS = "sinusoidal,learned,rope,alibi,t5,nope"
SIZES = {  # (layers, hidden, heads)
    "tiny": (2, 64, 4),
    "small": (4, 128, 4),
    "base": (6, 256, 8),
}


# ------------------------------------------------------------------------------- data
def build_tokenizer(texts: Sequence[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on ``texts`` (deterministic for the same texts)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<eos>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", mask_token="<mask>")


def split_corpus(texts: Sequence[str], eval_fraction: float) -> tuple[list[str], list[str]]:
    """Documents alternate deterministically: every k-th document is held out for evaluation."""
    k = max(2, round(1 / eval_fraction))
    return [t for i, t in enumerate(texts) if i % k != 1], [t for i, t in enumerate(texts) if i % k == 1]


def token_stream(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    ids = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False).input_ids)
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def batch_starts(num_tokens: int, length: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Window starts of a step: a function of (seed, step) only, so every encoding sees the same batches."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(0, num_tokens - length - 1, (batch_size,), generator=g)


def batch_hash(batch: torch.Tensor) -> str:
    return hashlib.sha1(batch.numpy().tobytes()).hexdigest()[:12]


def mlm_mask(batch: torch.Tensor, mask_id: int, step: int, seed: int, prob: float = 0.15):
    """BERT-style masking, deterministic per (seed, step): inputs with <mask>, labels -100 elsewhere."""
    g = torch.Generator().manual_seed(seed * 7919 + step)
    chosen = torch.rand(batch.shape, generator=g) < prob
    inputs, labels = batch.clone(), batch.clone()
    inputs[chosen] = mask_id
    labels[~chosen] = -100
    return inputs, labels


# ------------------------------------------------------------------------------ model
def build_model(family: str, size: str, vocab_size: int, train_len: int, seed: int):
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    layers, hidden, heads = SIZES[size]
    torch.manual_seed(seed)  # identical initial weights for every encoding
    if family == "gpt2":
        cfg = GPT2Config(n_layer=layers, n_embd=hidden, n_head=heads, n_positions=train_len, vocab_size=vocab_size,
                         bos_token_id=1, eos_token_id=1, pad_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                         attn_pdrop=0.0)
        return GPT2LMHeadModel(cfg)
    if family == "llama":
        cfg = LlamaConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                          num_key_value_heads=heads, intermediate_size=4 * hidden, vocab_size=vocab_size,
                          max_position_embeddings=train_len, bos_token_id=1, eos_token_id=1, pad_token_id=0,
                          rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
        return LlamaForCausalLM(cfg)
    if family == "bert":
        cfg = BertConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                         intermediate_size=4 * hidden, vocab_size=vocab_size, max_position_embeddings=train_len,
                         pad_token_id=0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        return BertForMaskedLM(cfg)
    raise ValueError(f"unknown family {family!r}; choose gpt2, llama or bert")


# --------------------------------------------------------------------------- training
def train_one(encoding: str, data: dict, args, log) -> dict:
    import hf_posenc

    from .variants import parse_variant

    name, options = parse_variant(encoding)
    model = build_model(args.family, args.size, len(data["tokenizer"]), args.train_len, args.seed)
    native_params = sum(p.numel() for p in model.parameters())
    hf_posenc.apply_posenc(model, name, **{**_encoding_options(name), **options})
    params = sum(p.numel() for p in model.parameters())
    model.train()
    torch.manual_seed(args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.01)
    budget_steps = args.steps if args.minutes is None else 10 ** 9
    warmup = max(1, min(100, (args.steps or 1000) // 10))
    stream, start, step, tokens, losses = data["train"], time.perf_counter(), 0, 0, []
    while step < budget_steps and (args.minutes is None or time.perf_counter() - start < args.minutes * 60):
        starts = batch_starts(len(stream), args.train_len, args.batch_size, step, args.seed)
        batch = torch.stack([stream[s:s + args.train_len] for s in starts.tolist()])
        lr = args.lr * min(1.0, (step + 1) / warmup)
        if args.minutes is None:  # cosine decay over the known number of steps
            lr *= 0.5 * (1 + math.cos(math.pi * min(step, budget_steps) / budget_steps))
        for group in opt.param_groups:
            group["lr"] = lr
        if args.family == "bert":
            inputs, labels = mlm_mask(batch, data["tokenizer"].mask_token_id, step, args.seed)
            loss = model(input_ids=inputs, labels=labels).loss
        else:
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        tokens += batch.numel()
        log({"encoding": encoding, "step": step, "loss": round(losses[-1], 5), "lr": lr,
             "batch": batch_hash(batch), "seed": args.seed, "elapsed": round(time.perf_counter() - start, 3)})
        step += 1
    train_seconds = time.perf_counter() - start
    model.eval()
    result = {"encoding": encoding, "steps": step, "train_seconds": round(train_seconds, 1),
              "tokens_per_second": round(tokens / train_seconds, 1), "parameters": params,
              "parameters_added": params - native_params,
              "final_train_loss": round(sum(losses[-20:]) / max(1, len(losses[-20:])), 4),
              "perplexity": {}, "notes": {}}
    t0 = time.perf_counter()
    for length in args.eval_lengths:
        try:
            result["perplexity"][str(length)] = evaluate(model, data, length, args)
        except ValueError as exc:  # e.g. a learned table shorter than the length
            result["perplexity"][str(length)] = None
            result["notes"][str(length)] = str(exc).split(";")[0]
    result["eval_seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _encoding_options(encoding: str) -> dict:
    return {"t5": {"init_std": 0.02}}.get(encoding, {})


@torch.no_grad()
def evaluate(model, data: dict, length: int, args) -> float:
    """Perplexity on non-overlapping windows of ``length`` tokens of the held-out stream (the same
    windows for every encoding); MLM pseudo-perplexity of 15% masked tokens for BERT."""
    stream = data["eval"]
    n_windows = min(args.eval_windows, len(stream) // length)
    if n_windows == 0:
        raise ValueError(f"the held-out text has only {len(stream)} tokens, fewer than {length}")
    nll, count = 0.0, 0
    for w in range(n_windows):
        window = stream[w * length:(w + 1) * length][None]
        if args.family == "bert":
            inputs, labels = mlm_mask(window, data["tokenizer"].mask_token_id, 10 ** 6 + w, args.seed)
            logits = model(input_ids=inputs).logits.float()
            mask = labels != -100
            nll += torch.nn.functional.cross_entropy(logits[mask], labels[mask], reduction="sum").item()
            count += int(mask.sum())
        else:
            logits = model(input_ids=window).logits.float()
            nll += torch.nn.functional.cross_entropy(logits[0, :-1], window[0, 1:], reduction="sum").item()
            count += length - 1
    return round(math.exp(nll / count), 3)


# ----------------------------------------------------------------------------- output
def to_markdown(results: list[dict], args) -> str:
    lengths = [str(n) for n in args.eval_lengths]
    head = "| encoding | " + " | ".join(f"ppl @{n}" for n in lengths) + " | params (change) | train tok/s | steps |"
    rows = [head, "|---" * (len(lengths) + 4) + "|"]
    for r in results:
        cells = [f"{r['perplexity'][n]:.2f}" if r["perplexity"][n] is not None else "n/a" for n in lengths]
        rows.append(f"| {r['encoding']} | " + " | ".join(cells)
                    + f" | {r['parameters']:,} ({r['parameters_added']:+,}) | {r['tokens_per_second']:.0f} | {r['steps']} |")
    notes = sorted({f"{r['encoding']} @{n}: {msg}" for r in results for n, msg in r["notes"].items()})
    meta = (f"family {args.family} ({args.size}), trained at {args.train_len} tokens, "
            + (f"{args.steps} steps" if args.minutes is None else f"{args.minutes} min each")
            + f", batch {args.batch_size}, lr {args.lr}, seed {args.seed}")
    return "\n".join([meta, "", *rows, *([""] + [f"- {n}" for n in notes] if notes else [])]) + "\n"


def plot(results: list[dict], args, path: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for r in results:
        pts = [(int(n), v) for n, v in r["perplexity"].items() if v is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=r["encoding"])
    ax.axvline(args.train_len, color="grey", linestyle="--", linewidth=1, label="training length")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("evaluation length (tokens)")
    ax.set_ylabel("perplexity" if args.family != "bert" else "MLM pseudo-perplexity")
    ax.set_title(f"{args.family} ({args.size}) trained at {args.train_len} tokens")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------- main
def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--encodings", default=DEFAULT_ENCODINGS,
                   help=f"comma list (default {DEFAULT_ENCODINGS}); with options, separate by ';': "
                        "'sinusoidal:scale=0.02;alibi'")
    p.add_argument("--family", default="gpt2", choices=["gpt2", "llama", "bert"],
                   help="architecture of the models trained from scratch (bert: masked-LM objective)")
    p.add_argument("--size", default="small", choices=sorted(SIZES), help="model size: " + ", ".join(
        f"{k}={v[0]} layers x {v[1]}" for k, v in SIZES.items()))
    p.add_argument("--train-len", type=int, default=128, help="training sequence length (default 128)")
    p.add_argument("--eval-lengths", default="128,256,512,1024", help="comma list of evaluation lengths")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=None, help="optimizer steps per encoding (default 600)")
    budget.add_argument("--minutes", type=float, default=None, help="equal wall-clock budget per encoding")
    p.add_argument("--batch-size", type=int, default=16, help="sequences per step (default 16)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary trained on the corpus (default 4096)")
    p.add_argument("--corpus", default=None, help="local files/globs or a datasets name/path (default: python3.11-doc)")
    p.add_argument("--max-documents", type=int, default=200, help="documents read from the corpus (default 200)")
    p.add_argument("--eval-windows", type=int, default=16, help="held-out windows per length (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--out", default="outputs/compare", help="output directory (default outputs/compare)")
    return p


def _parse(args) -> argparse.Namespace:
    import hf_posenc

    from .variants import parse_variant

    # NAME or NAME:k=v (e.g. sinusoidal:scale=0.02); ';' separates encodings that carry options
    sep = ";" if ";" in args.encodings else ","
    args.encodings = [e.strip() for e in args.encodings.split(sep) if e.strip()]
    known = hf_posenc.list_encodings()
    bad = [e for e in args.encodings if parse_variant(e)[0] not in known]
    if bad or not args.encodings:
        raise ValueError(f"unknown encoding(s) {bad}; valid: {', '.join(known)}")
    try:
        args.eval_lengths = sorted({int(x) for x in args.eval_lengths.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"--eval-lengths must be integers, got {args.eval_lengths!r}") from None
    if not args.eval_lengths or min(args.eval_lengths) < 2 or args.train_len < 2:
        raise ValueError("lengths must be >= 2")
    if args.steps is None and args.minutes is None:
        args.steps = 600
    if (args.steps is not None and args.steps < 1) or (args.minutes is not None and args.minutes <= 0):
        raise ValueError("--steps / --minutes must be positive")
    return args


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .evaluation.corpus import load_texts

    try:
        args = _parse(args)
        texts = load_texts(args.corpus, max_documents=args.max_documents)
    except (ValueError, FileNotFoundError) as exc:
        print(f"hf-posenc compare: error: {exc}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    train_texts, eval_texts = split_corpus(texts, 0.1)
    tokenizer = build_tokenizer(train_texts, args.vocab_size)
    data = {"tokenizer": tokenizer, "train": token_stream(tokenizer, train_texts),
            "eval": token_stream(tokenizer, eval_texts)}
    if len(data["train"]) < args.train_len * 4:
        print("hf-posenc compare: error: too little training text", file=sys.stderr)
        return 2
    print(f"corpus: {len(train_texts)} training documents ({len(data['train']):,} tokens), "
          f"{len(eval_texts)} held out ({len(data['eval']):,} tokens); tokenizer built in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    results = []
    with open(os.path.join(args.out, "train_log.jsonl"), "w") as log_file:
        def log(record):
            log_file.write(json.dumps(record) + "\n")

        for encoding in tqdm(args.encodings, desc="encodings", unit="enc"):
            results.append(train_one(encoding, data, args, log))
            log_file.flush()
            _write(results, args, time.perf_counter() - t0)
    print(to_markdown(results, args))
    print(f"results written to {os.path.abspath(args.out)} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


def _write(results, args, seconds) -> None:
    meta = {k: v for k, v in vars(args).items() if k != "func"}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"settings": meta, "total_seconds": round(seconds, 1), "results": results}, f, indent=1)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("# hf-posenc compare\n\n" + to_markdown(results, args))
    plot(results, args, os.path.join(args.out, "perplexity.png"))


def main(argv: Sequence[str] | None = None) -> int:
    return run(add_arguments(argparse.ArgumentParser(prog="hf-posenc compare", description=__doc__,
                                                     formatter_class=argparse.RawDescriptionHelpFormatter))
               .parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
