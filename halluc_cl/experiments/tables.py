"""Result tables of a comparison grid: ``results.csv``, ``results.md`` and the linear fits.

    halluc-cl compare --config configs/compare/fraction.yaml   # writes runs/compare/fraction/

Pure functions of the cells' ``summary.json`` contents; ``compare`` writes what they return.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from typing import Literal, NamedTuple

import numpy as np
from scipy import stats

from halluc_cl.experiments.gekhman import PUBLISHED, Regression, epoch_points, regression
from halluc_cl.experiments.paired import fact_outcomes, lasting_loss, paired_section

Split = Literal["test", "val"]

CSV_COLUMNS = ("method", "unknown_fraction", "seed", "split_seed", "split", "heldout_acc",
               "snapshot_acc", "snapshot_loss", "lasting_loss", "forgotten_rate",
               "heldout_peak", "heldout_decline", "hallucination_rate", "abstain_rate",
               "new_fact_acc", "new_fact_abstain_rate", "known_train_acc", "format_rate",
               "relative_cost",
               "train_token_passes", "wall_time_s", "heldout_disjoint", "config_hash", "run_dir")

# (row key, markdown header, digits): the mean ± std columns of results.md; the first is the
# headline, shown with its 95 % interval
MD_COLUMNS = (("lasting_loss", "lasting loss from the snapshot", 3),
              ("forgotten_rate", "forgotten", 3),
              ("hallucination_rate", "hallucination rate", 3),
              ("new_fact_acc", "new-fact acc", 3),
              ("heldout_acc", "held-out Known acc (final)", 3),
              ("abstain_rate", "abstain rate", 3),
              ("heldout_decline", "peak decline (secondary)", 3),
              ("relative_cost", "cost (× SFT)", 2),
              ("wall_time_s", "wall time (s)", 1))


class CellResult(NamedTuple):
    """One finished cell of the grid and its ``summary.json``."""

    method: str
    unknown_fraction: float
    seed: int
    run_dir: str
    summary: dict
    split_seed: int | None = None


class Fit(NamedTuple):
    """A least-squares fit: ``coef[0]`` is the intercept; ``r2`` is NaN when y is constant."""

    coef: tuple[float, ...]
    r2: float
    n: int


def cell_row(result: CellResult, split: Split = "test") -> dict:
    """The ``results.csv`` row of a cell on one held-out split (``None`` where the summary
    lacks a metric). ``relative_cost`` is filled in by ``add_relative_cost``."""
    s = result.summary
    final, peak = s.get("final", {}), s.get("peak", {})
    rate = "" if split == "test" else "val_"
    protocol = s.get("protocol", {})
    snapshot_acc = (s.get("warmup_end") or {}).get(f"heldout_{split}_acc")
    outcomes = fact_outcomes(s, result.run_dir, split)
    return {
        "method": result.method, "unknown_fraction": result.unknown_fraction,
        "seed": result.seed, "split_seed": protocol.get("split_seed", result.split_seed),
        "split": split, "heldout_acc": final.get(f"heldout_{split}_acc"),
        "snapshot_acc": snapshot_acc,
        "snapshot_loss": None if snapshot_acc is None or f"heldout_{split}_acc" not in final
        else snapshot_acc - final[f"heldout_{split}_acc"],
        "lasting_loss": lasting_loss(s, split),
        "forgotten_rate": sum(outcomes.values()) / len(outcomes) if outcomes else None,
        "heldout_peak": peak.get(f"heldout_{split}_acc"),
        "heldout_decline": s.get(f"heldout_{split}_decline"),
        "hallucination_rate": final.get(f"{rate}hallucination_rate"),
        "abstain_rate": final.get(f"{rate}abstain_rate"), "new_fact_acc": final.get("new_fact_acc"),
        "new_fact_abstain_rate": final.get("new_fact_abstain_rate"),
        "known_train_acc": final.get("known_train_acc"),
        "format_rate": final.get(f"{rate}format_rate"), "relative_cost": None,
        "train_token_passes": s.get("cost", {}).get("train_token_passes"),
        "wall_time_s": s.get("wall_time_s"), "heldout_disjoint": protocol.get("heldout_disjoint"),
        "config_hash": protocol.get("config_hash"), "run_dir": result.run_dir,
    }


def add_relative_cost(rows: list[dict], reference: str = "sft") -> None:
    """Set ``relative_cost``: a cell's training token passes over the mean of the
    ``reference`` method's cells at the same unknown fraction (left ``None`` without one)."""
    for row in rows:
        ref = [r["train_token_passes"] for r in rows if r["method"] == reference
               and r["unknown_fraction"] == row["unknown_fraction"] and r["train_token_passes"]]
        if ref and row["train_token_passes"] is not None:
            row["relative_cost"] = row["train_token_passes"] / statistics.mean(ref)


def table_rows(results: list[CellResult], split: Split = "test",
               cost_reference: str = "sft") -> list[dict]:
    """``cell_row`` of every cell with its relative cost."""
    rows = [cell_row(r, split) for r in results]
    add_relative_cost(rows, cost_reference)
    return rows


def results_csv(results: list[CellResult], split: Split = "test",
                cost_reference: str = "sft") -> str:
    """One CSV row per cell, columns ``CSV_COLUMNS``; a missing metric is an empty field."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in table_rows(results, split, cost_reference):
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def mean_std(values: list[float | None], digits: int = 3) -> str:
    """``mean ± std`` (sample std) of the non-missing values; one value alone; none: ``–``."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def confidence_interval(values: list[float | None], digits: int = 3) -> str:
    """The 95 % t-interval of the mean over seeds, ``[lo, hi]``; ``–`` below two values.

    >>> confidence_interval([0.1, 0.2, 0.3])
    '[-0.048, 0.448]'
    """
    vals = [v for v in values if v is not None]
    if len(vals) < 2:
        return "–"
    half = float(stats.t.ppf(0.975, len(vals) - 1)) * statistics.stdev(vals) / math.sqrt(len(vals))
    mean = statistics.mean(vals)
    return f"[{mean - half:.{digits}f}, {mean + half:.{digits}f}]"


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
    pts = [(r["unknown_fraction"], r["heldout_acc"]) for r in rows
           if r["heldout_acc"] is not None]
    return least_squares([[x] for x, _ in pts], [a for _, a in pts]) if pts else None


def _num(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.3f}"


FRACTION_FIT_TEXT = ("Final held-out Known accuracy against the unknown fraction X, least "
                     "squares over every cell (all seeds and fractions) of a method:")
GEKHMAN_FIT_TEXT = (
    "The regression of Gekhman et al. (2024) as they fit it, over every evaluation after the "
    "warm-up of every cell (`experiments/gekhman.py`): held-out Known accuracy in points = "
    "β0 + β_kn·N_kn/|D| + β_unk·N_unk/|D|, N_kn/|D| = (1−X)·known_train_acc and N_unk/|D| = "
    "X·new_fact_acc the shares of the SFT mix that are Known and Unknown facts the model "
    "answers right. 95 % intervals: bootstrap over whole cells (the epochs of one run are "
    "not independent). Theirs (in-distribution, EntityQuestions, primary text): "
    "β_kn = {beta_kn}, β_unk = {beta_unk}, R² = {r2}.")


def _fit_values(fit: Fit | None, n_coef: int) -> list[str]:
    if fit is None:
        return ["–"] * (n_coef + 2)
    return [_num(v) for v in (*fit.coef, fit.r2)] + [str(fit.n)]


def _regression_cells(results: list[CellResult], split: Split) -> list[list[tuple]]:
    return [epoch_points(r.summary, r.unknown_fraction, split) for r in results]


def _regression_row(name: str, fit: Regression | None) -> str:
    if fit is None:
        return f"| {name} | – | – | – | – | – | – |"
    cells = [f"{c:.1f} [{lo:.1f}, {hi:.1f}]" for c, lo, hi in zip(fit.coef, fit.low, fit.high)]
    return f"| {name} | " + " | ".join([*cells, _num(fit.r2), str(fit.points),
                                        str(fit.cells)]) + " |"


def _fit_section(rows: list[dict], results: list[CellResult], methods: list[str],
                 split: Split) -> list[str]:
    lines = ["", "## Gekhman et al. linear fits", "", FRACTION_FIT_TEXT, "",
             "| method | β0 | β | R² | cells |", "|---|---|---|---|---|"]
    for method in methods:
        fit = fraction_fit([r for r in rows if r["method"] == method])
        lines.append(f"| {method} | " + " | ".join(_fit_values(fit, 2)) + " |")
    lines += ["", GEKHMAN_FIT_TEXT.format(**PUBLISHED), "",
              "| cells of | β0 | β_kn | β_unk | R² | evaluations | cells |",
              "|---|---|---|---|---|---|---|",
              _regression_row("every method", regression(_regression_cells(results, split)))]
    for method in methods:
        mine = [r for r in results if r.method == method]
        lines.append(_regression_row(method, regression(_regression_cells(mine, split))))
    return lines


SELECTION_TEXT = (
    "The rule, written down before the runs: per method family (the name up to its first "
    "`_`), among the settings whose mean new-fact accuracy is at least 0.9× plain SFT's "
    "(`{reference}`, same unknown fraction), the one with the lowest mean lasting loss from "
    "the snapshot on this split. The earlier rule's choice (lowest mean peak decline) is "
    "beside it.")


def selection(rows: list[dict], methods: list[str], reference: str = "sft") -> list[dict]:
    """Per method family and unknown fraction, the setting the selection rule chooses
    (``SELECTION_TEXT``), with the earlier rule's choice; families whose settings all learn
    too little choose none."""
    out = []
    for x in sorted({r["unknown_fraction"] for r in rows}):
        def mean(method, key, x=x):
            vals = [r[key] for r in rows if r["method"] == method
                    and r["unknown_fraction"] == x and r[key] is not None]
            return statistics.mean(vals) if vals else None

        bar = mean(reference, "new_fact_acc")
        families: dict[str, list[str]] = {}
        for m in methods:
            if m != reference and mean(m, "new_fact_acc") is not None:
                families.setdefault(m.split("_")[0], []).append(m)
        for family, members in families.items():
            ok = [m for m in members if bar is None or mean(m, "new_fact_acc") >= 0.9 * bar]
            by_lasting = [m for m in ok if mean(m, "lasting_loss") is not None]
            by_peak = [m for m in ok if mean(m, "heldout_decline") is not None]
            out.append({
                "family": family, "unknown_fraction": x, "eligible": len(ok),
                "settings": len(members),
                "chosen": min(by_lasting, key=lambda m: mean(m, "lasting_loss"), default=None),
                "lasting_loss": min((mean(m, "lasting_loss") for m in by_lasting), default=None),
                "by_peak_decline": min(by_peak, key=lambda m: mean(m, "heldout_decline"),
                                       default=None)})
    return out


def _selection_section(rows: list[dict], methods: list[str], reference: str) -> list[str]:
    chosen = selection(rows, methods, reference)
    if not chosen:
        return []
    lines = ["", "## Selection", "", SELECTION_TEXT.format(reference=reference), "",
             ("| family | unknown fraction | settings (≥ 0.9× new-fact acc) | chosen "
              "| its lasting loss | by peak decline (earlier rule) |"), "|---|---|---|---|---|---|"]
    for c in chosen:
        loss = "–" if c["lasting_loss"] is None else f"{c['lasting_loss']:.3f}"
        lines.append(f"| {c['family']} | {c['unknown_fraction']:g} | {c['settings']} "
                     f"({c['eligible']}) | {c['chosen'] or '–'} | {loss} | "
                     f"{c['by_peak_decline'] or '–'} |")
    return lines


def _seed_list(group: list[dict]) -> str:
    pairs = [(r["split_seed"], r["seed"]) for r in group]
    if all(a == b for a, b in pairs):
        return ",".join(str(b) for _, b in pairs)
    return ",".join(f"{a}/{b}" for a, b in pairs)


def results_markdown(results: list[CellResult], methods: list[str], split: Split = "test",
                     cost_reference: str = "sft", provenance: str = "",
                     paired_with: tuple[str, ...] = ("sft", "known_only")) -> str:
    """Mean ± std over seeds per (method, unknown fraction), methods in the order given, on
    one held-out split, with the 95 % interval of the lasting loss from the snapshot; then
    every method paired with each of ``paired_with`` present in the grid, and on the
    validation split the selection.

    Adds the linear fits when the grid has at least three distinct unknown fractions.
    """
    rows = table_rows(results, split, cost_reference)
    fractions = sorted({r["unknown_fraction"] for r in rows})
    columns = MD_COLUMNS[1:]
    if any(r["format_rate"] is not None for r in rows):  # a grid that teaches an answer format
        columns = (*columns[:3], ("format_rate", "format rate (task)", 3), *columns[3:])
    header = ["method", "unknown fraction", "seeds", MD_COLUMNS[0][1], "95 % interval",
              *(h for _, h, _ in columns)]
    name = "heldout_test (report)" if split == "test" else "heldout_val (selection)"
    disjoint = sorted({str(r["heldout_disjoint"]) for r in rows})
    lines = ["# Comparison", "",
             (f"Held-out split: {name}; held-out disjointness: {', '.join(disjoint)}. "
              "Mean ± std over seeds (one seed: the value alone; missing: –); seeds are "
              "training seeds, written split/training where the split seed differs. Lasting "
              "loss from the snapshot: accuracy at the warm-up's end minus the mean of the "
              "last evaluations (`model.lasting_window`, 3 by default); forgotten: the share of "
              "facts right at the snapshot that are wrong or abstaining at the end; peak "
              "decline: (peak − final) / peak, the test split read at the validation peak, "
              "biased upward by the maximum over noisy evaluations (docs/metrics.md). Cost: "
              f"training token passes (3 × student + teacher tokens) over the "
              f"`{cost_reference}` rows' mean."),
             *([provenance] if provenance else []),
             "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        for x in fractions:
            group = [r for r in rows if r["method"] == method and r["unknown_fraction"] == x]
            if not group:
                continue
            key, _, digits = MD_COLUMNS[0]
            cells = [mean_std([r[key] for r in group], digits),
                     confidence_interval([r[key] for r in group], digits),
                     *(mean_std([r[k] for r in group], d) for k, _, d in columns)]
            lines.append(f"| {method} | {x:g} | {_seed_list(group)} | " + " | ".join(cells)
                         + " |")
    lines += paired_section(results, methods, list(paired_with), split)
    if split == "val":
        lines += _selection_section(rows, methods, cost_reference)
    if len(fractions) >= 3:
        lines += _fit_section(rows, results, methods, split)
    return "\n".join(lines) + "\n"
