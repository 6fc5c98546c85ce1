"""PNG plots of a comparison grid (matplotlib, Agg canvas; no display needed).

    halluc-cl compare --config configs/compare/paper.yaml   # writes runs/compare/paper/*.png

- ``heldout_<split>_acc.png``: held-out Known accuracy (the reported split: ``test``, or
  ``val`` in a selection grid) per evaluation epoch, mean over seeds,
  one line per method, for the unknown fraction nearest 0.5 (a method that pins its fraction,
  like the Known-only control, at its own); the warm-up end is marked.
- ``pareto.png``: new-fact accuracy against hallucination rate, mean ± std over seeds.
- ``unknown_fraction.png``: final held-out Known accuracy against the unknown fraction with
  each method's least-squares line (only when a method has two or more fractions).
"""

from __future__ import annotations

import io
import math
import statistics
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from halluc_cl.experiments.tables import CellResult, Split, cell_row, fraction_fit
from halluc_cl.io import atomic_write_bytes


def method_color(i: int):
    """Distinct colours for up to 20 methods (the default cycle repeats after 10)."""
    return f"C{i}" if i < 10 else matplotlib.colormaps["tab20"](2 * (i % 10) + 1)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def save_png(fig: Figure, path: Path) -> Path:
    """Render to PNG and write it atomically."""
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path


def nearest_fraction(fractions: list[float], target: float = 0.5) -> float:
    """The fraction closest to ``target`` (the smaller one on a tie)."""
    return min(fractions, key=lambda x: (abs(x - target), x))


def mean_curve(summaries: list[dict], key: str = "heldout_test_acc") -> tuple[list, list]:
    """Epochs and the mean of ``key`` over the summaries' ``history`` at each epoch."""
    by_epoch: dict[int, list[float]] = {}
    for summary in summaries:
        for h in summary.get("history", []):
            if h.get(key) is not None:
                by_epoch.setdefault(h["epoch"], []).append(h[key])
    epochs = sorted(by_epoch)
    return epochs, [statistics.mean(by_epoch[e]) for e in epochs]


def plot_curves(results: list[CellResult], methods: list[str], path: Path,
                split: Split = "test") -> Path:
    """Held-out Known accuracy per epoch; each method at its unknown fraction nearest 0.5."""
    x = nearest_fraction(sorted({r.unknown_fraction for r in results}))
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    warmups = set()
    for i, method in enumerate(methods):
        mine = [r for r in results if r.method == method]
        if not mine:
            continue
        x_m = nearest_fraction(sorted({r.unknown_fraction for r in mine}))  # a pinned method
        summaries = [r.summary for r in mine if r.unknown_fraction == x_m]
        epochs, acc = mean_curve(summaries, f"heldout_{split}_acc")
        if epochs:
            label = method if x_m == x else f"{method} (X={x_m:g})"
            ax.plot(epochs, acc, marker="o" if i < 10 else "s", ms=3, color=method_color(i), label=label)
        warmups |= {s.get("warmup_epochs", 0) for s in summaries}
    for j, w in enumerate(sorted(w for w in warmups if w)):
        ax.axvline(w - 1, color="gray", ls="--", lw=1, label="warm-up end" if j == 0 else None)
    ax.set(xlabel="epoch", ylabel=f"held-out Known accuracy ({split})",
           title=f"Held-out Known accuracy, {split} split (X={x:g}, mean over seeds)")
    ax.legend(fontsize=8)
    return save_png(fig, path)


def plot_pareto(results: list[CellResult], methods: list[str], path: Path,
                split: Split = "test") -> Path:
    """New-fact accuracy against hallucination rate per (method, fraction), mean ± std."""
    rows = [cell_row(r, split) for r in results]
    fractions = sorted({r["unknown_fraction"] for r in rows})
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot()
    for i, method in enumerate(methods):
        mine = {r["unknown_fraction"] for r in rows if r["method"] == method}
        for x in fractions:
            group = [r for r in rows if r["method"] == method and r["unknown_fraction"] == x
                     and r["hallucination_rate"] is not None and r["new_fact_acc"] is not None]
            if not group:
                continue
            hx, hx_err = _mean_std([r["hallucination_rate"] for r in group])
            ny, ny_err = _mean_std([r["new_fact_acc"] for r in group])
            ax.errorbar(hx, ny, xerr=hx_err, yerr=ny_err, fmt="o", color=method_color(i), capsize=3)
            label = method if len(mine) == 1 else f"{method} (X={x:g})"
            # labels alternate above and below their point: close points stay readable
            ax.annotate(label, (hx, ny), textcoords="offset points", fontsize=8,
                        xytext=(5, 5 if i % 2 == 0 else -11))
    ax.set(xlabel=f"hallucination rate (held-out Known, {split})", ylabel="new-fact accuracy",
           title="New knowledge vs hallucination (mean ± std over seeds)")
    return save_png(fig, path)


def plot_fraction(results: list[CellResult], methods: list[str], path: Path,
                  split: Split = "test") -> Path:
    """Final held-out Known accuracy against the unknown fraction, with fitted lines."""
    rows = [cell_row(r, split) for r in results]
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for i, method in enumerate(methods):
        mine = [r for r in rows if r["method"] == method and r["heldout_acc"] is not None]
        xs = sorted({r["unknown_fraction"] for r in mine})
        if not xs:
            continue
        stats = [_mean_std([r["heldout_acc"] for r in mine if r["unknown_fraction"] == x])
                 for x in xs]
        fit = fraction_fit(mine)
        label = method
        if fit is not None:
            r2 = "–" if math.isnan(fit.r2) else f"{fit.r2:.2f}"  # NaN: constant accuracy
            label = f"{method}: β={fit.coef[1]:.3f}, R²={r2}"
            ends = [min(xs), max(xs)]
            ax.plot(ends, [fit.coef[0] + fit.coef[1] * e for e in ends], color=method_color(i), lw=1)
        ax.errorbar(xs, [m for m, _ in stats], yerr=[s for _, s in stats], fmt="o",
                    color=method_color(i), capsize=3, label=label)
    ax.set(xlabel="unknown fraction X", ylabel=f"final held-out Known accuracy ({split})",
           title="Held-out Known accuracy vs share of Unknown facts")
    ax.legend(fontsize=8)
    return save_png(fig, path)


def write_plots(results: list[CellResult], methods: list[str], out: Path,
                split: Split = "test", prefix: str = "") -> list[Path]:
    """Write the plots into ``out`` (file names after ``prefix``) and return their paths."""
    out = Path(out)
    paths = [plot_curves(results, methods, out / f"{prefix}heldout_{split}_acc.png", split),
             plot_pareto(results, methods, out / f"{prefix}pareto.png", split)]
    per_method = [{r.unknown_fraction for r in results if r.method == m} for m in methods]
    if any(len(xs) >= 2 for xs in per_method):  # a pinned control alone draws no line
        paths.append(plot_fraction(results, methods, out / f"{prefix}unknown_fraction.png",
                                   split))
    else:  # a stale one from an earlier, wider grid goes
        (out / f"{prefix}unknown_fraction.png").unlink(missing_ok=True)
    return paths
