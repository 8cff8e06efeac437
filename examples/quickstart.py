"""Quickstart: switch the positional encoding of a pretrained model and see what changes.

Loads the embedded SmolLM2-135M-Instruct (a pretrained Llama, no download), then for each
positional encoding patches the same model in place with ``hf_posenc.apply_posenc``,
measures it, and restores it with ``hf_posenc.remove_posenc``. The table shows:

* parameters added (or removed, e.g. GPT-2's own table) by the encoding;
* the greedy continuation of a fixed prompt;
* the time of one forward pass over a few hundred tokens;
* the mean token loss (cross-entropy, nats) on a ~512-token passage of real text.

The model was pretrained with rotary embeddings (RoPE), so ``rope`` with the model's own
theta reproduces the unpatched model exactly, and every other encoding, applied without
fine-tuning, degrades it: that is expected, not a bug. Fine-tuning is planned for later.

    bash scripts/setup.sh && .venv/bin/python examples/quickstart.py
    .venv/bin/python examples/quickstart.py --dtype float32 --out table.md
    .venv/bin/python examples/quickstart.py --model path/to/a/causal/lm   # gpt2, llama, mistral, qwen2
"""
from __future__ import annotations

import argparse
import math
import sys
import textwrap
import time
from pydoc_data.topics import topics

import torch
from tqdm.auto import tqdm

import hf_posenc
from hf_posenc import apply_posenc, remove_posenc
from hf_posenc.default_model import load_model_and_tokenizer

NATIVE = "native"
DEFAULT_ENCODINGS = (NATIVE, "rope", "alibi", "t5", "nope", "sinusoidal", "learned")


def paragraphs(topic: str) -> list[str]:
    """Paragraphs of one topic of Python's own reference documentation (stdlib ``pydoc_data``)."""
    return [" ".join(p.split()) for p in topics[topic].split("\n\n") if p.strip()]


def real_text() -> tuple[str, str]:
    """(prompt, passage): fixed, real English text that ships with every Python."""
    prompt = paragraphs("for")[1]  # 'The "for" statement is used to iterate over the elements of ...'
    passage = "\n\n".join(topics[t].strip() for t in ("for", "while", "if", "try", "with"))
    return prompt, passage


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.inference_mode()
def measure(model, tokenizer, prompt_ids, passage_ids, timing_ids, max_new_tokens: int) -> dict:
    generated = model.generate(
        prompt_ids,
        attention_mask=torch.ones_like(prompt_ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
    )
    continuation = tokenizer.decode(generated[0, prompt_ids.shape[1]:], skip_special_tokens=True)

    model(timing_ids)  # warm-up
    times = []
    for _ in range(2):
        start = time.perf_counter()
        model(timing_ids)
        times.append(time.perf_counter() - start)

    loss = model(passage_ids, labels=passage_ids).loss.float().item()
    return {"continuation": continuation, "forward_ms": 1000 * min(times), "loss": loss}


def short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render(rows: list[dict], header: dict, markdown: bool) -> str:
    columns = list(header)
    cells = [[str(header[c]) for c in columns]] + [[str(r[c]) for c in columns] for r in rows]
    if markdown:
        esc = lambda s: s.replace("|", "\\|")  # noqa: E731
        lines = ["| " + " | ".join(esc(c) for c in cells[0]) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in cells[1:]]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    fmt = lambda row: "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(cells[0]), fmt(["-" * w for w in widths]), *map(fmt, cells[1:])])


def build_notes(rows: list[dict], native_kind: str, restored: float, restored_ok: bool) -> list[str]:
    """What the table shows, in words; each claim is checked against the rows."""
    loss = {r["name"]: r["loss"] for r in rows if r["loss"]}
    own = "rope" if native_kind.startswith("rotary") else "learned"
    notes = [
        f"The model was pretrained with {native_kind} positions, so every encoding other than its own "
        "gives it positions its weights never saw: without fine-tuning the loss rises and the text "
        "degrades. That is expected, not a bug; fine-tuning after a switch is planned for a later release."
    ]
    if NATIVE in loss and own in loss:
        same = loss[own] == loss[NATIVE]
        notes.append(f"'{own}' (with the model's own settings) {'reproduces' if same else 'does NOT reproduce'} "
                     f"the unpatched model: loss {loss[own]} vs {loss[NATIVE]}.")
    nope = next((r for r in rows if r["name"] == "nope" and r["loss"]), None)
    like_nope = [r["name"] for r in rows if nope and r["name"] not in ("nope", NATIVE) and r["loss"] == nope["loss"]
                 and r["dparams"] > nope["dparams"]]
    if like_nope:
        notes.append(f"{' and '.join(like_nope)} {'adds' if len(like_nope) == 1 else 'add'} parameters that start at zero, so until they are "
                     "trained the model behaves exactly like 'nope' (same loss).")
    notes.append(f"After remove_posenc the model is {'restored exactly' if restored_ok else 'NOT restored exactly'} "
                 f"(max |logit difference| {restored:.3g}).")
    return notes


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=textwrap.dedent(__doc__).split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", default="smollm2", help="'smollm2' (embedded, no download), a hub id, a local directory or a .gguf file; a causal LM")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"], help="dtype the model is loaded in")
    parser.add_argument("--encodings", default=",".join(DEFAULT_ENCODINGS), help=f"comma-separated; '{NATIVE}' is the unpatched model")
    parser.add_argument("--max-new-tokens", type=int, default=12, help="greedy continuation length")
    parser.add_argument("--eval-tokens", type=int, default=512, help="tokens of real text the loss is measured on")
    parser.add_argument("--timing-tokens", type=int, default=256, help="tokens in the timed forward pass")
    parser.add_argument("--seed", type=int, default=0, help="seed for the freshly initialised parameters of new encodings")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (unset: torch decides)")
    parser.add_argument("--out", default=None, help="also write the table as markdown to this file")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    transformers.logging.set_verbosity_error()  # hide the GGUF loader's notes; errors still show
    transformers.logging.disable_progress_bar()

    encodings = [e.strip() for e in args.encodings.split(",") if e.strip()]
    known = set(hf_posenc.list_encodings())
    unknown = [e for e in encodings if e != NATIVE and e not in known]
    if unknown:
        sys.exit(f"unknown encoding(s) {unknown}; choose from {NATIVE}, {', '.join(sorted(known))}")

    start = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype)
    load_s = time.perf_counter() - start
    config = model.config
    try:  # the family adapter knows; fall back to a guess if that internal API moves
        from hf_posenc.registry import get_family

        native_kind = {"rotary": "rotary (RoPE)"}.get(get_family(model).native, get_family(model).native)
    except Exception:
        native_kind = "absolute" if getattr(config, "model_type", "") in ("gpt2", "bert", "roberta") else "rotary (RoPE)"
    print(f"loaded {config.model_type} {getattr(config, '_name_or_path', '') or args.model} "
          f"({count_parameters(model) / 1e6:.1f}M parameters, {model.dtype}, {native_kind} native positions) in {load_s:.1f} s")

    prompt, passage = real_text()
    prompt_ids = tokenizer(prompt, return_tensors="pt").input_ids
    passage_ids = tokenizer(passage, return_tensors="pt").input_ids[:, : args.eval_tokens]
    timing_ids = passage_ids[:, : args.timing_tokens]
    print(f"prompt ({prompt_ids.shape[1]} tokens): {prompt}")
    print(f"loss on {passage_ids.shape[1]} tokens of Python's reference docs (pydoc_data: for/while/if/try/with); "
          f"forward timed at {timing_ids.shape[1]} tokens\n")

    base_params = count_parameters(model)
    with torch.inference_mode():
        reference_logits = model(timing_ids).logits.float()
    rows, failures = [], 0
    for name in tqdm(encodings, desc="encodings", unit="enc"):
        row = {"name": name, "dparams": 0, "encoding": name if name != NATIVE else "native (unpatched)", "params": "", "continuation": "", "fwd": "", "loss": "", "ppl": ""}
        applied = False
        try:
            if name != NATIVE:
                torch.manual_seed(args.seed)
                apply_posenc(model, name)
                applied = True
            row["dparams"] = count_parameters(model) - base_params
            row["params"] = f"{row['dparams']:+,}"
            result = measure(model, tokenizer, prompt_ids, passage_ids, timing_ids, args.max_new_tokens)
            row.update(
                continuation=short(repr(result["continuation"]), 44),  # repr() shows newlines
                fwd=f"{result['forward_ms']:.0f}",
                loss=f"{result['loss']:.3f}",
                ppl=f"{math.exp(min(result['loss'], 50)):.1f}",
            )
        except Exception as error:  # show the failure in the table, keep going
            failures += 1
            row["continuation"] = f"ERROR {type(error).__name__}: {short(' '.join(str(error).split()), 60)}"
        finally:
            if applied:
                remove_posenc(model)
        rows.append(row)

    with torch.inference_mode():
        restored = (model(timing_ids).logits.float() - reference_logits).abs().max().item()
    restored_ok = restored == 0.0 and count_parameters(model) == base_params

    header = {"encoding": "encoding", "params": "Δ params", "continuation": f"greedy continuation ({args.max_new_tokens} tokens)",
              "fwd": f"fwd ms @{timing_ids.shape[1]}", "loss": f"loss @{passage_ids.shape[1]}", "ppl": "ppl"}
    print(render(rows, header, markdown=False))
    notes = build_notes(rows, native_kind, restored, restored_ok)
    print()
    for note in notes:
        print(textwrap.fill(note, width=100, subsequent_indent="  ", initial_indent="* "))

    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(f"# hf_posenc quickstart: {config.model_type}, {model.dtype}\n\n")
            f.write(render(rows, header, markdown=True) + "\n\n")
            f.write("\n".join(f"* {n}" for n in notes) + "\n")
        print(f"\nwrote {args.out}")
    return 1 if failures or not restored_ok else 0


if __name__ == "__main__":
    sys.exit(main())
