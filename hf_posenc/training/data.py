"""Training data: documents -> held-out split -> tokenised (``datasets.map``, cached) -> packed blocks,
and the deterministic sample stream every process reads its micro-batches from.

Sample order. Training blocks are visited in a seeded permutation per epoch
(``numpy.random.default_rng([seed, epoch])``); the *global* sample stream is that order epoch after
epoch. Global micro-step ``m`` takes stream positions ``[m*B*W, (m+1)*B*W)`` (B = --batch-size,
W = processes) and process ``r`` the slice ``[r*B, (r+1)*B)`` of it. So

* the processes never read the same stream position (disjoint data within an epoch);
* a run with B=2 on 2 processes reads, per micro-step, exactly the samples a run with B=4 on one
  process reads (same global batch, same loss);
* resuming needs only the micro-step counter (saved with every checkpoint): no data-loader state.

MLM masks and PoSE position ids are drawn from a generator seeded by ``(seed, stream position)``,
not from the global RNG, so they too are the same whatever the number of processes or restarts.
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .errors import FinetuneError
from .pose import pose_position_ids

logger = logging.getLogger("hf_posenc.training")

CHARS_PER_TOKEN_BOUND = 8  # --max-train-tokens: characters read per wanted token (generous upper bound)
PACK_BATCH = 1000  # documents per datasets.map batch when packing (a remainder < one block is dropped per batch)
_TEXT_EXTS = (".txt", ".text", ".md", ".rst")
_DATA_EXTS = (".json", ".jsonl", ".csv", ".parquet", ".arrow")


# ------------------------------------------------------------------------------ documents
def _expand_train_files(specs: list[str]) -> list[str]:
    files: list[str] = []
    for spec in specs:
        for part in (p.strip() for p in spec.split(",")):
            if not part:
                continue
            path = os.path.expanduser(part)
            if os.path.isdir(path):
                found = sorted(f for f in glob.glob(os.path.join(path, "**", "*"), recursive=True)
                               if os.path.isfile(f) and f.lower().endswith(_TEXT_EXTS + _DATA_EXTS))
                if not found:
                    raise FinetuneError(f"--train-files: directory {part!r} holds no {'/'.join(_TEXT_EXTS + _DATA_EXTS)} files")
            elif glob.has_magic(path):
                found = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
                if not found:
                    raise FinetuneError(f"--train-files: no file matches {part!r}")
            elif os.path.isfile(path):
                found = [path]
            else:
                raise FinetuneError(f"--train-files: no such file {part!r}")
            files += [f for f in found if f not in files]
    if not files:
        raise FinetuneError("--train-files: no files given")
    return files


def _load_dataset_texts(spec: str, column: str, max_documents: int | None) -> list[str]:
    import datasets

    name, split = (spec, "") if os.path.exists(spec) else (spec.partition(":")[0], spec.partition(":")[2])
    is_saved = os.path.isdir(name) and any(os.path.isfile(os.path.join(name, f))
                                           for f in ("dataset_info.json", "dataset_dict.json", "state.json"))
    try:
        data = datasets.load_from_disk(name) if is_saved else datasets.load_dataset(name, split=split or None)
    except Exception as exc:  # noqa: BLE001 - reported with what was tried
        where = "a save_to_disk directory" if is_saved else "datasets.load_dataset"
        raise FinetuneError(f"--dataset {spec!r}: could not load it as {where}: {type(exc).__name__}: {exc}") from exc
    if isinstance(data, (datasets.DatasetDict, dict)):
        if split and split not in data:
            raise FinetuneError(f"--dataset {spec!r}: no split {split!r} (splits: {list(data)})")
        split = split or ("train" if "train" in data else next(iter(data)))
        data = data[split]
    if column not in data.column_names:
        raise FinetuneError(f"--dataset {spec!r} has no {column!r} column (columns: {data.column_names}); "
                            f"pass --text-column")
    if max_documents is not None:
        data = data.select(range(min(max_documents, len(data))))
    return [t for t in data[column] if t]


def load_documents(args) -> tuple[list[str], str]:
    """(documents, a description of the source) from --train-files, --dataset or the default corpus."""
    from ..evaluation.corpus import load_texts

    if args.train_files:
        files = _expand_train_files(args.train_files)
        try:
            texts = load_texts(files, column=args.text_column, max_documents=args.max_documents, min_chars=1)
        except (FileNotFoundError, ValueError) as exc:
            raise FinetuneError(f"--train-files: {exc}") from exc
        source = f"{len(files)} file(s)"
    elif args.dataset:
        texts = _load_dataset_texts(args.dataset, args.text_column, args.max_documents)
        source = f"dataset {args.dataset}"
    else:
        try:
            texts = load_texts(None, max_documents=args.max_documents)
        except FileNotFoundError as exc:
            raise FinetuneError(f"no --train-files or --dataset given and {exc}") from exc
        source = "the default corpus (Python 3.11 documentation sources)"
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise FinetuneError(f"no training data: {source} holds no non-empty documents")
    return texts, source


def split_documents(docs: list[str], eval_documents: int, seed: int) -> tuple[list[str], list[str]]:
    """(train, held-out): a seeded random choice of ``eval_documents`` documents (at most half of them)."""
    n_eval = min(eval_documents, len(docs) // 2)
    if eval_documents and n_eval < eval_documents:
        logger.warning("only %d document(s): holding out %d for evaluation instead of %d", len(docs), n_eval,
                       eval_documents)
    order = np.random.default_rng([seed, 7]).permutation(len(docs))
    held = set(order[:n_eval].tolist())
    return [d for i, d in enumerate(docs) if i not in held], [docs[i] for i in sorted(held)]


def _bound_chars(docs: list[str], max_tokens: int | None) -> list[str]:
    if max_tokens is None:
        return docs
    budget, out = max_tokens * CHARS_PER_TOKEN_BOUND, []
    for doc in docs:
        if budget <= 0:
            break
        out.append(doc[:budget])
        budget -= len(out[-1])
    return out


# ------------------------------------------------------------------------------ tokenise and pack
def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str().encode() if backend is not None else repr(sorted(tokenizer.get_vocab().items())).encode()
    return _digest(type(tokenizer).__name__, body, tokenizer.all_special_ids)


def special_layout(tokenizer, objective: str) -> tuple[int | None, list[int], list[int]]:
    """(separator between packed documents, block prefix, block suffix) token ids."""
    if objective == "mlm":
        sep = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
        if tokenizer.cls_token_id is not None and tokenizer.sep_token_id is not None:
            return sep, [tokenizer.cls_token_id], [tokenizer.sep_token_id]
        return sep, [], []
    return tokenizer.eos_token_id, [], []


@dataclass
class PreparedData:
    train: Any  # datasets.Dataset with an ``input_ids`` column of packed blocks
    eval_docs: list[list[int]]  # token ids of the held-out documents
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def num_blocks(self) -> int:
        return len(self.train)


def prepare_data(args, tokenizer, accelerator=None) -> PreparedData:
    """Load, split, tokenise and pack; the tokenised/packed tables are cached under the cache dir.

    With several processes the main one prepares (and caches) first, the others then read the cache.
    """
    import contextlib

    import datasets

    first = accelerator.main_process_first() if accelerator is not None else contextlib.nullcontext()
    with first:
        docs, source = load_documents(args)
        train_docs, eval_docs = split_documents(docs, args.eval_documents, args.seed)
        if not train_docs:
            raise FinetuneError(f"no training data: {source} gives {len(docs)} document(s), all held out")
        train_docs = _bound_chars(train_docs, args.max_train_tokens)
        sep, prefix, suffix = special_layout(tokenizer, args.objective)
        chunk = args.seq_len - len(prefix) - len(suffix)
        cache_dir = args.cache_dir or os.path.join(args.output_dir, "data_cache")
        os.makedirs(cache_dir, exist_ok=True)
        text_key = _digest(_digest(*[d.encode() for d in train_docs]), tokenizer_fingerprint(tokenizer))
        pack_key = _digest(text_key, sep, prefix, suffix, chunk)
        table = datasets.Dataset.from_dict({"text": train_docs})

        def tokenize(batch):
            return {"input_ids": tokenizer(batch["text"], add_special_tokens=False, verbose=False)["input_ids"]}

        def pack(batch):
            flat: list[int] = []
            for ids in batch["input_ids"]:
                flat.extend(ids)
                if sep is not None:
                    flat.append(sep)
            return {"input_ids": [prefix + flat[i:i + chunk] + suffix
                                  for i in range(0, len(flat) - chunk + 1, chunk)]}

        quiet = _quiet_datasets(accelerator)
        tokens = table.map(tokenize, batched=True, remove_columns=["text"], desc="tokenise",
                           cache_file_name=os.path.join(cache_dir, f"tokens-{text_key}.arrow"),
                           new_fingerprint=f"tokens-{text_key}", num_proc=_num_proc(args, len(train_docs)),
                           load_from_cache_file=True)
        token_count = int(sum(len(ids) for ids in tokens["input_ids"]))
        packed = tokens.map(pack, batched=True, batch_size=PACK_BATCH, remove_columns=["input_ids"], desc="pack",
                            cache_file_name=os.path.join(cache_dir, f"packed-{pack_key}.arrow"),
                            new_fingerprint=f"packed-{pack_key}", load_from_cache_file=True)
        quiet.close()
        if args.max_train_tokens is not None and len(packed) > max(1, args.max_train_tokens // args.seq_len):
            packed = packed.select(range(max(1, args.max_train_tokens // args.seq_len)))
        if len(packed) == 0:
            raise FinetuneError(
                f"no training data: the {len(train_docs)} training document(s) of {source} give {token_count} tokens, "
                f"fewer than one --seq-len block of {args.seq_len}; add data or lower --seq-len")
        eval_ids = [tokenizer(d, add_special_tokens=False, verbose=False)["input_ids"] for d in eval_docs]
    info = {"source": source, "documents": len(docs), "train_documents": len(train_docs),
            "eval_documents": len(eval_docs), "train_tokens_tokenised": token_count, "train_blocks": len(packed),
            "train_tokens_packed": len(packed) * args.seq_len, "eval_tokens": int(sum(map(len, eval_ids))),
            "cache_dir": cache_dir}
    return PreparedData(train=packed, eval_docs=eval_ids, info=info)


def _num_proc(args, n_docs: int) -> int | None:
    return args.preprocessing_workers if args.preprocessing_workers > 1 and n_docs >= 2 * args.preprocessing_workers else None


class _quiet_datasets:
    """Progress bars of datasets.map only on the main process."""

    def __init__(self, accelerator):
        import datasets

        self.disabled = accelerator is not None and not accelerator.is_main_process
        if self.disabled:
            datasets.disable_progress_bars()

    def close(self):
        if self.disabled:
            import datasets

            datasets.enable_progress_bars()


# ------------------------------------------------------------------------------ sample stream
def _seed_for(seed: int, position: int, salt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}:{seed}:{position}".encode()).digest()[:8], "little") >> 1


class SampleStream:
    """The global sample order and each process's micro-batches (see the module docstring)."""

    def __init__(self, data: PreparedData, *, seed: int, batch_size: int, world_size: int, rank: int):
        self.data, self.seed = data, seed
        self.batch_size, self.world_size, self.rank = batch_size, world_size, rank
        self.n = data.num_blocks
        self._perms: dict[int, np.ndarray] = {}

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) > 2:
                self._perms.clear()
            self._perms[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perms[epoch]

    def block_index(self, position: int) -> int:
        return int(self.permutation(position // self.n)[position % self.n])

    def positions(self, micro_step: int) -> list[int]:
        """Stream positions this process reads at global micro-step ``micro_step``."""
        start = micro_step * self.global_batch + self.rank * self.batch_size
        return list(range(start, start + self.batch_size))

    def blocks(self, positions: list[int]) -> tuple[list[int], torch.Tensor]:
        indices = [self.block_index(p) for p in positions]
        rows = self.data.train[indices]["input_ids"]
        return indices, torch.tensor(rows, dtype=torch.long)


class BatchMaker:
    """Model inputs of a micro-batch: CLM (labels = inputs), MLM masking, PoSE position ids."""

    def __init__(self, args, tokenizer, vocab_size: int, pose_target_len: int | None = None):
        self.tokenizer = tokenizer
        self.objective, self.seed, self.seq_len = args.objective, args.seed, args.seq_len
        self.pose_target_len, self.pose_chunks = pose_target_len, args.pose_chunks
        self.mlm_probability = args.mlm_probability
        self.mask_id = tokenizer.mask_token_id
        self.vocab_size = vocab_size
        self.special = torch.tensor(sorted({i for i in tokenizer.all_special_ids if i is not None}), dtype=torch.long)
        if self.objective == "mlm" and self.mask_id is None:
            raise FinetuneError("--objective mlm needs a tokenizer with a mask token (e.g. BERT's [MASK])")

    def __call__(self, ids: torch.Tensor, positions: list[int]) -> dict[str, torch.Tensor]:
        if self.objective == "mlm":
            inputs, labels = zip(*(self.mask(row, p) for row, p in zip(ids, positions)))
            return {"input_ids": torch.stack(inputs), "labels": torch.stack(labels)}
        batch = {"input_ids": ids, "labels": ids.clone()}
        if self.pose_target_len is not None:
            batch["position_ids"] = torch.stack([
                pose_position_ids(ids.shape[1], self.pose_target_len,
                                  torch.Generator().manual_seed(_seed_for(self.seed, p, "pose")), self.pose_chunks)
                for p in positions])
            # An explicit mask: without one, transformers reads position-id jumps as packed-sequence
            # boundaries and would block attention between the PoSE chunks.
            batch["attention_mask"] = torch.ones_like(ids)
        return batch

    def mask(self, row: torch.Tensor, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT masking of one sequence (DataCollatorForLanguageModeling's 80/10/10), seeded per sample."""
        g = torch.Generator().manual_seed(_seed_for(self.seed, position, "mlm"))
        row, labels = row.clone(), row.clone()
        candidates = ~torch.isin(row, self.special)
        prob = torch.full(row.shape, self.mlm_probability) * candidates
        masked = torch.bernoulli(prob, generator=g).bool()
        if not masked.any() and candidates.any():  # never a sample without a target
            idx = candidates.nonzero().flatten()
            masked[idx[torch.randint(len(idx), (1,), generator=g)]] = True
        labels[~masked] = -100
        replace = torch.bernoulli(torch.full(row.shape, 0.8), generator=g).bool() & masked
        row[replace] = self.mask_id
        randomise = torch.bernoulli(torch.full(row.shape, 0.5), generator=g).bool() & masked & ~replace
        row[randomise] = torch.randint(self.vocab_size, row.shape, generator=g)[randomise]
        return row, labels


__all__ = ["load_documents", "split_documents", "prepare_data", "PreparedData", "SampleStream", "BatchMaker",
           "tokenizer_fingerprint"]
