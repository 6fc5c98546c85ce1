"""Mechanism studies: a comparison grid whose methods are the levels of named factors.

    halluc-cl analyze keys --config configs/analysis/keys.yaml          # H3: name vs UUID keys
    halluc-cl analyze overlap --config configs/analysis/overlap.yaml    # H3: the overlap knob
    halluc-cl analyze capacity --config configs/analysis/capacity.yaml  # H1: size x new facts
    halluc-cl analyze behaviour --config configs/analysis/behaviour.yaml  # H2: answer side

Each study runs ``halluc-cl compare`` (same cells, same reuse of finished cells, same
``results.csv`` / ``results.md`` / plots) and then writes ``study.csv``, ``study.md`` and
``study.png``: per method its factor levels and the mean ± std over seeds of the held-out Known
decline, new-fact accuracy, hallucination rate and final representation drift, plotted
against the ``x`` factor with one line per level of the ``series`` factor.
"""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

from halluc_cl.errors import ConfigError
from halluc_cl.experiments.compare import compare
from halluc_cl.experiments.tables import CellResult, cell_row, mean_std
from halluc_cl.io import atomic_write_text

Level = int | float | str  # in this order: jsonargparse tries them left to right
# (column, header, value of a cell)
MEASURES = (
    ("heldout_decline", "held-out Known decline (test)", lambda r: cell_row(r)["heldout_decline"]),
    ("new_fact_acc", "new-fact acc", lambda r: cell_row(r)["new_fact_acc"]),
    ("hallucination_rate", "hallucination rate", lambda r: cell_row(r)["hallucination_rate"]),
    ("heldout_drift", "drift (final)", lambda r: r.summary.get("final", {}).get("heldout_drift")),
)


def check_factors(methods: dict[str, list[str]], factors: dict[str, dict[str, Level]],
                  x: str, series: str | None) -> list[str]:
    """The factor names, after checking that every method sets every factor."""
    names = sorted({k for levels in factors.values() for k in levels})
    reserved = [k for k in names if k in ("method", "seeds") or k.startswith(
        tuple(key for key, _, _ in MEASURES))]
    if reserved:
        raise ConfigError(f"factor name(s) {reserved} clash with the study table's columns")
    missing = [m for m in methods if m not in factors]
    if missing:
        raise ConfigError(f"methods {missing} have no entry in `factors`")
    extra = [m for m in factors if m not in methods]
    if extra:
        raise ConfigError(f"`factors` names methods that are not in `methods`: {extra}")
    for method, levels in factors.items():
        unset = [k for k in names if k not in levels]
        if unset:
            raise ConfigError(f"method {method!r} sets no level for factor(s) {unset}")
    for key, role in ((x, "x"), (series, "series")):
        if key is not None and key not in names:
            raise ConfigError(f"{role} factor {key!r} is not one of the factors {names}")
    return names


def study_rows(results: list[CellResult], methods: list[str],
               factors: dict[str, dict[str, Level]]) -> list[dict]:
    """One row per method: its factor levels, seed count and per-measure seed values."""
    rows = []
    for method in methods:
        cells = [r for r in results if r.method == method]
        row = {"method": method, **factors[method], "seeds": len(cells)}
        for key, _, value in MEASURES:
            row[key] = [v for v in map(value, cells) if v is not None]
        rows.append(row)
    return rows


def study_csv(rows: list[dict], factor_names: list[str]) -> str:
    """``study.csv``: factors, seeds, and each measure's mean and sample std."""
    buf = io.StringIO()
    fields = ["method", *factor_names, "seeds"]
    for key, _, _ in MEASURES:
        fields += [f"{key}_mean", f"{key}_std"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        out = {k: row[k] for k in ("method", *factor_names, "seeds")}
        for key, _, _ in MEASURES:
            vals = row[key]
            out[f"{key}_mean"] = statistics.mean(vals) if vals else ""
            out[f"{key}_std"] = statistics.stdev(vals) if len(vals) > 1 else ""
        writer.writerow(out)
    return buf.getvalue()


def study_markdown(title: str, rows: list[dict], factor_names: list[str]) -> str:
    """``study.md``: the same table, mean ± std over seeds."""
    head = ["method", *factor_names, "seeds", *(h for _, h, _ in MEASURES)]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["method"], *(str(row[k]) for k in factor_names), str(row["seeds"])]
        cells += [mean_std(row[key]) for key, _, _ in MEASURES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_study(rows: list[dict], x: str, series: str | None, path: Path,
               log_x: bool = False) -> Path:
    """Decline and new-fact accuracy against the ``x`` factor, one line per ``series`` level."""
    from matplotlib.figure import Figure

    from halluc_cl.experiments.plots import method_color, save_png

    levels = list(dict.fromkeys(row[x] for row in rows))
    numeric = all(isinstance(v, (int, float)) for v in levels)
    position = (lambda v: v) if numeric else (lambda v: levels.index(v))
    groups = list(dict.fromkeys(row[series] for row in rows)) if series else [None]
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    for ax, key, label in zip(axes, ("heldout_decline", "new_fact_acc"),
                              ("held-out Known decline", "new-fact accuracy")):
        for i, group in enumerate(groups):
            pts = sorted((position(r[x]), r[key]) for r in rows
                         if r[key] and (series is None or r[series] == group))
            if not pts:
                continue
            xs = [p for p, _ in pts]
            means = [statistics.mean(v) for _, v in pts]
            stds = [statistics.stdev(v) if len(v) > 1 else 0.0 for _, v in pts]
            ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, color=method_color(i),
                        label=f"{series}={group}" if series else None)
        ax.set_xlabel(x)
        ax.set_ylabel(label)
        if log_x and numeric:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(levels)), [str(v) for v in levels])
        ax.grid(alpha=0.3)
    if series:
        axes[0].legend()
    return save_png(fig, path)


def mechanism_study(
    methods: dict[str, list[str]],
    factors: dict[str, dict[str, Level]],
    x: str,
    series: str | None = None,
    title: str = "Mechanism study",
    seeds: list[int] = [0, 1, 2],  # noqa: B006 (jsonargparse needs a literal)
    unknown_fractions: list[float] = [0.5],  # noqa: B006
    out: str = "runs/analysis/study",
    fit_args: list[str] = [],  # noqa: B006
    plots: bool = True,
    log_x: bool = False,
) -> list[dict]:
    """Run a mechanism study's grid and write ``study.csv``, ``study.md`` and ``study.png``.

    Args:
        methods: Method name -> config files given together to ``halluc-cl fit`` (as for
            ``compare``: paths, or shipped config names such as ``world/default_uuid``).
        factors: Method name -> its level of each factor, e.g. ``{"key": "uuid"}``.
        x: The factor on the plot's x axis.
        series: The factor drawn as separate lines (``None``: one line).
        title: Heading of ``study.md``.
        seeds: Seeds of every method.
        unknown_fractions: Values of ``data.unknown_fraction`` (a method's configs may pin one).
        out: Output folder (the grid's runs and tables, and the study files).
        fit_args: Extra arguments appended to every fit.
        plots: Write the grid's plots and ``study.png``.
        log_x: Log-scale x axis (numeric factors).

    Returns:
        The study rows (factor levels and per-seed values of each measure).
    """
    names = check_factors(methods, factors, x, series)
    results = compare(methods, seeds, unknown_fractions, out, fit_args, plots)
    rows = study_rows(results, list(methods), factors)
    root = Path(out)
    atomic_write_text(root / "study.csv", study_csv(rows, names))
    atomic_write_text(root / "study.md", study_markdown(title, rows, names))
    written = [root / "study.csv", root / "study.md"]
    if plots:
        written.append(plot_study(rows, x, series, root / "study.png", log_x))
    print("\n" + (root / "study.md").read_text().rstrip())
    print("wrote " + ", ".join(str(p) for p in written))
    return rows
