"""Result records of the evaluations: plain dataclasses with ``to_dict`` / ``to_markdown`` /
``save_json`` / ``load_json``.

Missing values (a length no document reaches) are ``None`` in Python and ``null`` in JSON, never
NaN, so the files are strict JSON. Only ``seconds`` fields vary between identical runs.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


class _JsonMixin:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save_json(self, path: str | os.PathLike) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, allow_nan=False)
            f.write("\n")

    @classmethod
    def load_json(cls, path: str | os.PathLike):
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


@dataclass
class LengthPerplexity:
    """Perplexity at one window length ``length`` (tokens per window)."""

    length: int
    stride: int
    perplexity: float | None  # exp(nll); None when no document is long enough
    nll: float | None  # mean negative log-likelihood per scored token (nats)
    tokens_scored: int
    windows: int
    documents_used: int
    documents_skipped: int  # documents shorter than `length` tokens
    seconds: float
    note: str = ""


@dataclass
class PerplexityResult(_JsonMixin):
    """``perplexity_by_length`` output: one ``LengthPerplexity`` per requested length."""

    lengths: list[LengthPerplexity]
    documents: int  # documents given
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def at(self, length: int) -> LengthPerplexity:
        for item in self.lengths:
            if item.length == length:
                return item
        raise KeyError(f"length {length} was not evaluated (have {[i.length for i in self.lengths]})")

    def perplexities(self) -> dict[int, float | None]:
        return {i.length: i.perplexity for i in self.lengths}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PerplexityResult":
        return cls(lengths=[LengthPerplexity(**i) for i in d["lengths"]], documents=d["documents"],
                   settings=dict(d.get("settings", {})), seconds=d.get("seconds", 0.0))

    def to_markdown(self) -> str:
        rows = [[str(i.length), str(i.stride), _fmt(i.perplexity), _fmt(i.nll, 4), str(i.tokens_scored),
                 str(i.windows), str(i.documents_used), str(i.documents_skipped), _fmt(i.seconds, 1),
                 i.note or ""] for i in self.lengths]
        return _table(["length", "stride", "perplexity", "nll", "tokens", "windows", "docs used",
                       "docs skipped", "seconds", "note"], rows)


@dataclass
class PasskeyCell:
    """Pass-key accuracy at one (length, depth): ``correct`` of ``trials`` prompts."""

    length: int
    depth: float
    trials: int
    correct: int
    accuracy: float
    prompt_tokens: float  # mean measured prompt length
    seconds: float


@dataclass
class PasskeyResult(_JsonMixin):
    """``passkey_retrieval`` output; ``samples`` holds every trial (key, model output, match)."""

    lengths: list[int]
    depths: list[float]
    cells: list[PasskeyCell]
    trials: int
    seed: int
    samples: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def accuracy(self, length: int, depth: float) -> float:
        for c in self.cells:
            if c.length == length and math.isclose(c.depth, depth):
                return c.accuracy
        raise KeyError(f"no cell for length {length}, depth {depth}")

    def mean_accuracy(self, length: int) -> float:
        """Accuracy over all trials at ``length`` (every depth has the same number of trials)."""
        cells = [c for c in self.cells if c.length == length]
        if not cells:
            raise KeyError(f"length {length} was not evaluated (have {self.lengths})")
        return sum(c.correct for c in cells) / sum(c.trials for c in cells)

    def seconds_at(self, length: int) -> float:
        return sum(c.seconds for c in self.cells if c.length == length)

    def trials_description(self) -> str:
        """``"2 trials per cell"``, or per length when runs with different trial counts were merged."""
        per = {c.length: c.trials for c in self.cells}
        if len(set(per.values())) <= 1:
            return f"{self.trials} trials per cell"
        return "trials per cell: " + ", ".join(f"{n}: {t}" for n, t in per.items())

    def per_length(self) -> dict[int, float]:
        return {n: self.mean_accuracy(n) for n in self.lengths}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean_accuracy"] = {str(n): a for n, a in self.per_length().items()}  # JSON keys are strings
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PasskeyResult":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["cells"] = [PasskeyCell(**c) for c in d["cells"]]
        return cls(**kw)

    def to_markdown(self) -> str:
        headers = ["length"] + [f"depth {d:g}" for d in self.depths] + ["mean", "seconds"]
        rows = [[str(n)] + [_fmt(self.accuracy(n, d)) for d in self.depths]
                + [_fmt(self.mean_accuracy(n)), _fmt(self.seconds_at(n), 1)] for n in self.lengths]
        return _table(headers, rows)


@dataclass
class VariantResult:
    """One evaluated variant (``native``, an encoding or a context extension) of a model."""

    name: str
    posenc: dict[str, Any] | None = None  # {"name": ..., "options": {...}} if apply_posenc was used
    extend: dict[str, Any] | None = None  # {"method": ..., "options": {...}} if extend_context was used
    perplexity: PerplexityResult | None = None
    passkey: PasskeyResult | None = None
    seconds: float = 0.0
    error: str | None = None  # set when the variant could not be (fully) evaluated

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "posenc": self.posenc, "extend": self.extend,
                "perplexity": self.perplexity.to_dict() if self.perplexity else None,
                "passkey": self.passkey.to_dict() if self.passkey else None, "seconds": self.seconds,
                "error": self.error}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "VariantResult":
        return cls(name=d["name"], posenc=d.get("posenc"), extend=d.get("extend"),
                   perplexity=PerplexityResult.from_dict(d["perplexity"]) if d.get("perplexity") else None,
                   passkey=PasskeyResult.from_dict(d["passkey"]) if d.get("passkey") else None,
                   seconds=d.get("seconds", 0.0), error=d.get("error"))


@dataclass
class EvaluationReport(_JsonMixin):
    """Several named variants of one model, evaluated alike; ``metadata`` says how."""

    variants: list[VariantResult] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> VariantResult:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"no variant {name!r} (have {[v.name for v in self.variants]})")

    def names(self) -> list[str]:
        return [v.name for v in self.variants]

    def to_dict(self) -> dict[str, Any]:
        return {"metadata": self.metadata, "variants": [v.to_dict() for v in self.variants]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EvaluationReport":
        return cls(variants=[VariantResult.from_dict(v) for v in d["variants"]], metadata=dict(d.get("metadata", {})))

    def to_markdown(self) -> str:
        parts = []
        meta = self.metadata
        if meta:
            parts.append("\n".join(f"- {k}: {', '.join(map(str, v)) if isinstance(v, list) else v}"
                                   for k, v in meta.items() if v is not None and not isinstance(v, dict)))
        ppl = [v for v in self.variants if v.perplexity]
        if ppl:
            lengths = sorted({i.length for v in ppl for i in v.perplexity.lengths})
            rows = []
            for v in ppl:
                by = {i.length: i for i in v.perplexity.lengths}
                rows.append([v.name] + [_fmt(by[n].perplexity) if n in by else "-" for n in lengths]
                            + [_fmt(v.perplexity.seconds, 1)])
            parts.append("### Perplexity (sliding window, lower is better)\n\n"
                         + _table(["variant"] + [str(n) for n in lengths] + ["seconds"], rows))
            detail = ppl[0].perplexity.lengths
            parts.append("Tokens scored / documents used per length: " + ", ".join(
                f"{i.length}: {i.tokens_scored} / {i.documents_used}" for i in detail))
        pk = [v for v in self.variants if v.passkey]
        if pk:
            lengths = sorted({n for v in pk for n in v.passkey.lengths})
            rows = [[v.name] + [_fmt(v.passkey.mean_accuracy(n)) if n in v.passkey.lengths else "-" for n in lengths]
                    + [_fmt(v.passkey.seconds, 1)] for v in pk]
            parts.append("### Pass-key retrieval accuracy (mean over depths)\n\n"
                         + _table(["variant"] + [str(n) for n in lengths] + ["seconds"], rows))
            for v in pk:
                parts.append(f"#### {v.name}: pass-key accuracy by length and depth "
                             f"({v.passkey.trials_description()})\n\n" + v.passkey.to_markdown())
        parts += [f"**{v.name}: error** - {v.error}" for v in self.variants if v.error]
        return "\n\n".join(parts) + "\n"


__all__ = ["LengthPerplexity", "PerplexityResult", "PasskeyCell", "PasskeyResult", "VariantResult",
           "EvaluationReport"]


def merge_reports(reports: list[EvaluationReport], sources: list[str] | None = None) -> EvaluationReport:
    """One report from several runs (e.g. a long evaluation split in parts).

    Runs may hold distinct variants, or the same variant measured at distinct lengths (say
    perplexity in one run, pass key at 32k in another); a variant's parts are joined, lengths in
    order. Anything measured twice is an error, as is a variant whose parts were built
    differently: nothing is silently dropped or overwritten. Metadata that differ between runs
    (settings, wall times) are kept per run under ``runs``; those all runs share stay at the top.
    """
    if not reports:
        raise ValueError("nothing to merge")
    variants: dict[str, VariantResult] = {}
    for report in reports:
        for v in report.variants:
            variants[v.name] = _merge_variant(variants[v.name], v) if v.name in variants else v
    keys = [k for k in reports[0].metadata if all(r.metadata.get(k) == reports[0].metadata[k] for r in reports)]
    shared = {k: reports[0].metadata[k] for k in keys}
    runs = {}
    for i, r in enumerate(reports):
        label = sources[i] if sources else f"run {i + 1}"
        runs[label] = {"variants": [v.name for v in r.variants],
                       **{k: v for k, v in r.metadata.items() if k not in shared}}
    metadata = {**shared, "merged_from": list(runs), "runs": runs}
    return EvaluationReport(variants=list(variants.values()), metadata=metadata)


def _merge_variant(a: VariantResult, b: VariantResult) -> VariantResult:
    if (a.posenc, a.extend) != (b.posenc, b.extend):
        raise ValueError(f"variant {a.name!r} was built differently in two runs: "
                         f"{(a.posenc, a.extend)} vs {(b.posenc, b.extend)}")
    errors = [e for e in (a.error, b.error) if e]
    return VariantResult(name=a.name, posenc=a.posenc, extend=a.extend,
                         perplexity=_merge_parts(a.name, a.perplexity, b.perplexity, _merge_perplexity),
                         passkey=_merge_parts(a.name, a.passkey, b.passkey, _merge_passkey),
                         seconds=a.seconds + b.seconds, error="; ".join(errors) or None)


def _merge_parts(name, a, b, join):
    return join(name, a, b) if a is not None and b is not None else (a if b is None else b)


def _merge_perplexity(name: str, a: PerplexityResult, b: PerplexityResult) -> PerplexityResult:
    twice = sorted({i.length for i in a.lengths} & {i.length for i in b.lengths})
    if twice:
        raise ValueError(f"variant {name!r}: perplexity at {twice} measured in more than one run")
    if a.settings != b.settings or a.documents != b.documents:
        raise ValueError(f"variant {name!r}: perplexity parts ran with different texts or settings")
    return PerplexityResult(lengths=sorted(a.lengths + b.lengths, key=lambda i: i.length), documents=a.documents,
                            settings=a.settings, seconds=a.seconds + b.seconds)


def _merge_passkey(name: str, a: PasskeyResult, b: PasskeyResult) -> PasskeyResult:
    twice = sorted(set(a.lengths) & set(b.lengths))
    if twice:
        raise ValueError(f"variant {name!r}: pass key at {twice} measured in more than one run")
    if a.depths != b.depths or a.settings != b.settings:
        raise ValueError(f"variant {name!r}: pass-key parts ran with different depths or settings")
    lengths = sorted(a.lengths + b.lengths)
    cells = sorted(a.cells + b.cells, key=lambda c: (lengths.index(c.length), a.depths.index(c.depth)))
    # `trials` is per cell in the cells; the top-level field keeps the smallest, so it never overstates
    return PasskeyResult(lengths=lengths, depths=a.depths, cells=cells, trials=min(a.trials, b.trials),
                         seed=a.seed, samples=a.samples + b.samples, settings=a.settings,
                         seconds=a.seconds + b.seconds)
