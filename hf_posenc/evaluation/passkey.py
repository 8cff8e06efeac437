"""Pass-key retrieval (Mohtashami & Jaggi, 2023, "Landmark Attention").

A 5-digit pass key is hidden in repeated filler text at a given depth (fraction of the
filler before it); the model must greedily complete "The pass key is" with it. Prompt
(plain text, no chat template), with the original task description as its first line::

    There is an important info hidden inside a lot of irrelevant text. Find it and ...
    The grass is green. The sky is blue. ... (filler before the needle)
    The pass key is 12345. Remember it. 12345 is the pass key.
    ... (filler after the needle)
    What is the pass key? The pass key is

The prompt is tokenised with the tokenizer's defaults (a BOS where the model expects one), and
the filler is trimmed word by word so the measured prompt length is the largest not above the
requested length (in practice within a few tokens of it).
"""
from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from .perplexity import _device
from .results import PasskeyCell, PasskeyResult

TASK = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. "
        "I will quiz you about the important information there.")
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = "What is the pass key? The pass key is"
_FILLER_WORDS = FILLER.split()


@dataclass
class PasskeyPrompt:
    """One prompt: ``input_ids`` [1, T]; ``needle_start`` = index of the needle's first token."""

    text: str
    input_ids: torch.Tensor
    passkey: str
    depth: float
    needle_start: int
    filler_words: int

    @property
    def num_tokens(self) -> int:
        return self.input_ids.shape[1]


def make_passkey(seed: int, length: int, depth: float, trial: int) -> str:
    """A deterministic 5-digit key per cell and trial (string seeds are hashed stably by ``random``)."""
    return str(random.Random(f"passkey:{seed}:{length}:{depth:g}:{trial}").randint(10000, 99999))


def _compose(words: int, depth: float, key: str) -> tuple[str, str]:
    """(prompt text, text before the needle) with ``words`` filler words, needle at a sentence end."""
    filler = [_FILLER_WORDS[i % len(_FILLER_WORDS)] for i in range(words)]
    ends = [0] + [i + 1 for i, w in enumerate(filler) if w.endswith(".")] + [words]
    cut = min(ends, key=lambda e: (abs(e - depth * words), e))  # nearest sentence boundary
    before = "\n".join(p for p in (TASK, " ".join(filler[:cut])) if p) + "\n"
    after = " ".join(filler[cut:])
    text = before + NEEDLE.format(key=key) + "\n" + (after + "\n" if after else "") + QUESTION
    return text, before


def build_passkey_prompt(tokenizer, length: int, depth: float, passkey: str) -> PasskeyPrompt:
    """The prompt of at most ``length`` tokens with the most filler; raises if even no filler is too long."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth}")

    def count(words: int) -> int:
        return len(tokenizer(_compose(words, depth, passkey)[0])["input_ids"])

    if count(0) > length:
        raise ValueError(f"length {length} is too short for a pass-key prompt ({count(0)} tokens without filler)")
    lo, hi = 0, max(8, length)  # count(lo) <= length; grow hi until count(hi) > length
    while count(hi) <= length:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # largest word count that fits; counts grow with words
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) <= length else (lo, mid)
    text, before = _compose(lo, depth, passkey)
    enc = tokenizer(text, return_tensors="pt")
    needle_start = None
    if getattr(tokenizer, "is_fast", False):
        needle_start = enc.char_to_token(0, len(before))
    if needle_start is None:  # slow tokenizer: count the tokens before the needle
        needle_start = len(tokenizer(before.rstrip("\n"))["input_ids"])
    return PasskeyPrompt(text=text, input_ids=enc["input_ids"], passkey=passkey, depth=depth,
                         needle_start=int(needle_start), filler_words=lo)


def extract_answer(text: str) -> str | None:
    """The first number in the model's output, or ``None``."""
    match = re.search(r"\d+", text)
    return match.group(0) if match else None


def passkey_retrieval(
    model,
    tokenizer,
    lengths: Sequence[int],
    *,
    depths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0),
    trials: int = 10,
    seed: int = 0,
    max_new_tokens: int = 10,
    progress: bool = True,
) -> PasskeyResult:
    """Accuracy of greedy pass-key retrieval for each (length, depth) over ``trials`` prompts.

    ``model.generate`` is called with one prompt at a time (no padding to reason about); the
    answer is correct when the first number in the generated text equals the key exactly.
    """
    from tqdm.auto import tqdm

    lengths, depths = [int(n) for n in lengths], [float(d) for d in depths]
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    device = _device(model)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    cells, samples = [], []
    start_all = time.perf_counter()
    bar = tqdm(total=len(lengths) * len(depths) * trials, desc="passkey", disable=not progress, unit="prompt")
    for length in lengths:
        for depth in depths:
            start, correct, tokens = time.perf_counter(), 0, 0
            for trial in range(trials):
                key = make_passkey(seed, length, depth, trial)
                prompt = build_passkey_prompt(tokenizer, length, depth, key)
                ids = prompt.input_ids.to(device)
                with torch.inference_mode():
                    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                         num_beams=1, max_new_tokens=max_new_tokens, pad_token_id=pad)
                text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
                answer = extract_answer(text)
                ok = answer == key
                correct += ok
                tokens += prompt.num_tokens
                samples.append({"length": length, "depth": depth, "trial": trial, "passkey": key,
                                "prompt_tokens": prompt.num_tokens, "needle_start": prompt.needle_start,
                                "output": text, "answer": answer, "correct": ok})
                bar.update(1)
                bar.set_postfix(length=length, depth=depth, acc=f"{correct}/{trial + 1}")
            cells.append(PasskeyCell(length=length, depth=depth, trials=trials, correct=correct,
                                     accuracy=correct / trials, prompt_tokens=tokens / trials,
                                     seconds=round(time.perf_counter() - start, 3)))
    bar.close()
    return PasskeyResult(lengths=lengths, depths=depths, cells=cells, trials=trials, seed=seed, samples=samples,
                         settings={"max_new_tokens": max_new_tokens, "decoding": "greedy",
                                   "dtype": str(getattr(model, "dtype", ""))},
                         seconds=round(time.perf_counter() - start_all, 3))


__all__ = ["passkey_retrieval", "build_passkey_prompt", "make_passkey", "extract_answer", "PasskeyPrompt",
           "TASK", "FILLER", "NEEDLE", "QUESTION"]
