"""PNG plots of an ``EvaluationReport`` (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

import os


def _pyplot():
    try:
        import matplotlib
    except ImportError as exc:  # optional dependency
        raise ImportError("plots need matplotlib: pip install 'hf-posenc[plot]'") from exc
    matplotlib.use("Agg", force=True)  # headless; never opens a window
    import matplotlib.pyplot as plt

    return plt


def plot_perplexity(report, path: str | os.PathLike, *, title: str | None = None) -> str | None:
    """Perplexity against window length, one line per variant (x: log2 length, y: log scale).

    Lengths no document reached are left out of a line. Returns the path, or ``None`` if no
    variant has perplexity results.
    """
    plt = _pyplot()
    variants = [v for v in report.variants if v.perplexity is not None]
    if not variants:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    lengths = set()
    for v in variants:
        pts = [(i.length, i.perplexity) for i in v.perplexity.lengths if i.perplexity is not None]
        lengths.update(n for n, _ in pts)
        if pts:
            ax.plot(*zip(*pts), marker="o", label=v.name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda y, _: f"{y:g}")  # 20 rather than 2x10^1
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    if lengths:
        ax.set_xticks(sorted(lengths), [str(n) for n in sorted(lengths)])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("perplexity (log scale)")
    ax.set_title(title or "Sliding-window perplexity by context length")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)
    return os.fspath(path)


def plot_passkey(variant, path: str | os.PathLike) -> str | None:
    """Heat map of pass-key accuracy of one variant: rows = depth, columns = length."""
    plt = _pyplot()
    result = variant.passkey
    if result is None:
        return None
    grid = [[result.accuracy(n, d) for n in result.lengths] for d in result.depths]
    fig, ax = plt.subplots(figsize=(1.2 * len(result.lengths) + 2.5, 0.6 * len(result.depths) + 2))
    image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="RdYlGn", aspect="auto")
    ax.set_xticks(range(len(result.lengths)), [str(n) for n in result.lengths])
    ax.set_yticks(range(len(result.depths)), [f"{d:g}" for d in result.depths])
    for r, row in enumerate(grid):
        for c, acc in enumerate(row):
            ax.text(c, r, f"{acc:.2f}", ha="center", va="center", fontsize=9)
    ax.set_xlabel("prompt length (tokens)")
    ax.set_ylabel("needle depth")
    ax.set_title(f"Pass-key accuracy: {variant.name} ({result.trials_description()})")
    fig.colorbar(image, ax=ax, label="accuracy")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)
    return os.fspath(path)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def save_plots(report, out_dir: str | os.PathLike) -> list[str]:
    """``perplexity.png`` and ``passkey_<variant>.png`` for each variant; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = [plot_perplexity(report, os.path.join(out_dir, "perplexity.png"))]
    written += [plot_passkey(v, os.path.join(out_dir, f"passkey_{_safe(v.name)}.png")) for v in report.variants]
    return [p for p in written if p]


__all__ = ["plot_perplexity", "plot_passkey", "save_plots"]
