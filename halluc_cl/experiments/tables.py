"""Result tables of a comparison grid: ``results.csv``, ``results.md`` and the linear fits.

    halluc-cl compare --config configs/compare/fraction.yaml   # writes runs/compare/fraction/

Pure functions of the cells' ``summary.json`` contents; ``compare`` writes what they return.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from typing import NamedTuple

import numpy as np

CSV_COLUMNS = ("method", "unknown_fraction", "seed", "heldout_known_acc", "heldout_known_peak",
               "heldout_known_decline", "hallucination_rate", "abstain_rate", "new_fact_acc",
               "new_fact_abstain_rate", "known_train_acc", "wall_time_s", "run_dir")

# (row key, markdown header, digits): the mean ± std columns of results.md
MD_COLUMNS = (("heldout_known_decline", "held-out Known decline", 3),
              ("hallucination_rate", "hallucination rate", 3),
              ("new_fact_acc", "new-fact acc", 3),
              ("heldout_known_acc", "held-out Known acc (final)", 3),
              ("abstain_rate", "abstain rate", 3),
              ("new_fact_abstain_rate", "new-fact abstain rate", 3),
              ("wall_time_s", "wall time (s)", 1))


class CellResult(NamedTuple):
    """One finished cell of the grid and its ``summary.json``."""

    method: str
    unknown_fraction: float
    seed: int
    run_dir: str
    summary: dict


class Fit(NamedTuple):
    """A least-squares fit: ``coef[0]`` is the intercept; ``r2`` is NaN when y is constant."""

    coef: tuple[float, ...]
    r2: float
    n: int


def cell_row(result: CellResult) -> dict:
    """The ``results.csv`` row of a cell (``None`` where the summary lacks a metric)."""
    s = result.summary
    final, peak = s.get("final", {}), s.get("peak", {})
    return {
        "method": result.method, "unknown_fraction": result.unknown_fraction,
        "seed": result.seed, "heldout_known_acc": final.get("heldout_known_acc"),
        "heldout_known_peak": peak.get("heldout_known_acc"),
        "heldout_known_decline": s.get("heldout_known_decline"),
        "hallucination_rate": final.get("hallucination_rate"),
        "abstain_rate": final.get("abstain_rate"), "new_fact_acc": final.get("new_fact_acc"),
        "new_fact_abstain_rate": final.get("new_fact_abstain_rate"),
        "known_train_acc": final.get("known_train_acc"), "wall_time_s": s.get("wall_time_s"),
        "run_dir": result.run_dir,
    }


def results_csv(results: list[CellResult]) -> str:
    """One CSV row per cell, columns ``CSV_COLUMNS``; a missing metric is an empty field."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for result in results:
        writer.writerow({k: "" if v is None else v for k, v in cell_row(result).items()})
    return buf.getvalue()


def mean_std(values: list[float | None], digits: int = 3) -> str:
    """``mean ± std`` (sample std) of the non-missing values; one value alone; none: ``–``."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def least_squares(features: list[list[float]], y: list[float]) -> Fit | None:
    """Fit ``y = β0 + Σ β_j x_j``; ``None`` when the coefficients are not identifiable."""
    design = np.column_stack([np.ones(len(y)), np.asarray(features, dtype=float)])
    target = np.asarray(y, dtype=float)
    coef, _, rank, _ = np.linalg.lstsq(design, target, rcond=None)
    if rank < design.shape[1]:
        return None
    ss_res = float(np.sum((target - design @ coef) ** 2))
    ss_tot = float(np.sum((target - target.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
    return Fit(tuple(float(c) for c in coef), r2, len(y))


def fraction_fit(rows: list[dict]) -> Fit | None:
    """Final held-out Known accuracy = β0 + β·X over the given cells."""
    pts = [(r["unknown_fraction"], r["heldout_known_acc"]) for r in rows
           if r["heldout_known_acc"] is not None]
    return least_squares([[x] for x, _ in pts], [a for _, a in pts]) if pts else None


def gekhman_features(row: dict) -> list[float] | None:
    """Shares of the SFT mix that are Known / Unknown facts the model fits.

    ``(1 − X)·known_train_acc`` and ``X·new_fact_acc`` (Gekhman et al. 2024); a split absent
    from the mix (X = 0 or 1) contributes 0. ``None`` when a needed metric is missing.
    """
    x, kn, unk = row["unknown_fraction"], row["known_train_acc"], row["new_fact_acc"]
    if (x < 1 and kn is None) or (x > 0 and unk is None):
        return None
    return [(1 - x) * (kn or 0.0), x * (unk or 0.0)]


def gekhman_fit(rows: list[dict]) -> Fit | None:
    """acc = β0 + β_kn·(1−X)·known_train_acc + β_unk·X·new_fact_acc over the given cells."""
    pts = [(f, r["heldout_known_acc"]) for r in rows
           if r["heldout_known_acc"] is not None and (f := gekhman_features(r)) is not None]
    return least_squares([f for f, _ in pts], [a for _, a in pts]) if pts else None


def _num(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.3f}"


FRACTION_FIT_TEXT = ("Final held-out Known accuracy against the unknown fraction X, least "
                     "squares over every cell (all seeds and fractions) of a method:")
GEKHMAN_FIT_TEXT = ("The two-regressor fit of Gekhman et al. (2024) over every cell of every "
                    "method, with the shares of the SFT mix that are Known and Unknown facts the "
                    "model fits: acc = β0 + β_kn·(1−X)·known_train_acc + β_unk·X·new_fact_acc")


def _fit_values(fit: Fit | None, n_coef: int) -> list[str]:
    if fit is None:
        return ["–"] * (n_coef + 2)
    return [_num(v) for v in (*fit.coef, fit.r2)] + [str(fit.n)]


def _fit_section(rows: list[dict], methods: list[str]) -> list[str]:
    lines = ["", "## Gekhman et al. linear fit", "", FRACTION_FIT_TEXT, "",
             "| method | β0 | β | R² | cells |", "|---|---|---|---|---|"]
    for method in methods:
        fit = fraction_fit([r for r in rows if r["method"] == method])
        lines.append(f"| {method} | " + " | ".join(_fit_values(fit, 2)) + " |")
    lines += ["", GEKHMAN_FIT_TEXT, "",
              "| β0 | β_kn | β_unk | R² | cells |", "|---|---|---|---|---|",
              "| " + " | ".join(_fit_values(gekhman_fit(rows), 3)) + " |"]
    return lines


def results_markdown(results: list[CellResult], methods: list[str]) -> str:
    """Mean ± std over seeds per (method, unknown fraction), methods in the order given.

    Adds the linear fits when the grid has at least three distinct unknown fractions.
    """
    rows = [cell_row(r) for r in results]
    fractions = sorted({r["unknown_fraction"] for r in rows})
    header = ["method", "unknown fraction", "seeds"] + [h for _, h, _ in MD_COLUMNS]
    lines = ["# Comparison", "", "Mean ± std over seeds (one seed: the value alone; missing: –).",
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        for x in fractions:
            group = [r for r in rows if r["method"] == method and r["unknown_fraction"] == x]
            if not group:
                continue
            cells = [mean_std([r[k] for r in group], d) for k, _, d in MD_COLUMNS]
            lines.append(f"| {method} | {x:g} | {len(group)} | " + " | ".join(cells) + " |")
    if len(fractions) >= 3:
        lines += _fit_section(rows, methods)
    return "\n".join(lines) + "\n"
