"""Paired statistics of a comparison grid: each method against a reference method (plain SFT,
the Known-only control) on the same seeds and the same facts (docs/compare.md, "Paired
comparisons").

- **Per seed**: the method's lasting loss from the snapshot minus the reference's, on the
  same split and training seed; the mean difference with its 95 % t-interval and the paired
  t-test's p-value (``scipy.stats``).
- **Per fact**: among the held-out facts right at both runs' snapshots, those forgotten
  (wrong or abstaining at the end) under the method but not the reference, and the reverse.
  The discordant counts are summed over seeds and tested with the exact McNemar test (a
  two-sided binomial test of the split of discordant facts at 1/2).

The per-fact outcomes come from each cell's ``summary.json`` (``snapshot.<split>.kept_ids``
and ``forgotten_ids``) or, for a summary written before those fields, from the cell's
``predictions/epoch_K.jsonl`` files.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import NamedTuple

from scipy import stats

from halluc_cl.experiments.power import FACT_ALPHA, SEED_ALPHA, facts_needed, seeds_needed

LASTING_WINDOW = 3  # ``metrics/snapshot.LASTING_WINDOW``, for summaries that do not say


class PairedDifference(NamedTuple):
    """The mean of per-seed differences, its 95 % t-interval and the paired t-test's p."""

    mean: float
    low: float
    high: float
    p: float
    n: int


def paired_difference(a: list[float], b: list[float]) -> PairedDifference | None:
    """``a − b`` paired by position; ``None`` below two pairs.

    >>> d = paired_difference([0.30, 0.25, 0.35], [0.10, 0.10, 0.10])
    >>> round(d.mean, 3), round(d.low, 3), round(d.high, 3), round(d.p, 4)
    (0.2, 0.076, 0.324, 0.0202)
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    if len(a) < 2:
        return None
    diffs = [x - y for x, y in zip(a, b)]
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    if sd == 0:
        return PairedDifference(mean, mean, mean, 1.0 if mean == 0 else 0.0, len(diffs))
    half = float(stats.t.ppf(0.975, len(diffs) - 1)) * sd / math.sqrt(len(diffs))
    p = float(stats.ttest_rel(a, b).pvalue)
    return PairedDifference(mean, mean - half, mean + half, p, len(diffs))


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value of discordant counts (1.0 with none).

    >>> round(mcnemar_exact(10, 2), 4)
    0.0386
    """
    n = only_a + only_b
    return 1.0 if n == 0 else float(stats.binomtest(only_a, n, 0.5).pvalue)


def lasting_loss(summary: dict, split: str = "test") -> float | None:
    """The lasting loss from the snapshot of a cell on ``heldout_<split>``: its accuracy at
    the warm-up's end minus the mean of its last ``window`` evaluations after it: the
    summary's own value (from fact counts), else from the history (summaries written before
    the ``snapshot`` field)."""
    block = summary.get("snapshot", {}).get(f"heldout_{split}", {})
    if "lasting_loss" in block:
        return block["lasting_loss"]
    key = f"heldout_{split}_acc"
    warmup, history = summary.get("warmup_end") or {}, summary.get("history", [])
    window = summary.get("snapshot", {}).get("window", LASTING_WINDOW)
    after = [h[key] for h in history if h["epoch"] > warmup.get("epoch", math.inf) and key in h]
    if key not in warmup or not after:
        return None
    tail = after[-window:]
    return warmup[key] - sum(tail) / len(tail)


def fact_outcomes(summary: dict, run_dir: str | Path, split: str = "test"
                  ) -> dict[str, bool] | None:
    """Held-out facts right at the snapshot -> forgotten at the end, for one cell; ``None``
    when neither the summary nor the predictions files hold them."""
    block = summary.get("snapshot", {}).get(f"heldout_{split}")
    if block and "kept_ids" in block:
        return {**dict.fromkeys(block["kept_ids"], False),
                **dict.fromkeys(block["forgotten_ids"], True)}
    warmup, epochs = summary.get("warmup_end") or {}, summary.get("history", [])
    if "epoch" not in warmup or not epochs:
        return None
    folder = Path(run_dir) / "predictions"
    first, last = (folder / f"epoch_{e}.jsonl" for e in (warmup["epoch"], epochs[-1]["epoch"]))
    if not (first.is_file() and last.is_file()):
        return None

    def right(path: Path) -> dict[str, bool]:
        rows = (json.loads(line) for line in path.read_text().splitlines() if line.strip())
        return {r["id"]: r["correct"] for r in rows if r["split"] == f"heldout_{split}"}

    at_snapshot, final = right(first), right(last)
    return {i: not final.get(i, False) for i, ok in at_snapshot.items() if ok}


def discordant(a: dict[str, bool], b: dict[str, bool]) -> tuple[int, int, int]:
    """Facts right at both snapshots forgotten under ``a`` only, under ``b`` only, and how
    many facts are right at both."""
    both = a.keys() & b.keys()
    return (sum(a[i] and not b[i] for i in both), sum(b[i] and not a[i] for i in both),
            len(both))


def _seeds_for(pairs: list[tuple[float, float]]) -> int | None:
    diffs = [a - b for a, b in pairs]
    return seeds_needed(statistics.mean(diffs), statistics.stdev(diffs)) \
        if len(diffs) > 1 else None


PAIRED_TEXT = (
    "Each method against a reference on the same seeds and facts (`experiments/paired.py`). "
    "Δ: the method's lasting loss from the snapshot minus the reference's, per seed; mean, "
    "95 % t-interval and paired t-test p. Forgotten only by A / only by B: held-out facts "
    "right at both runs' snapshots and wrong or abstaining at the end under one run only, "
    "summed over seeds; p: exact McNemar test of those counts. Power (`experiments/power.py`): "
    f"the seeds at which the paired t-test (α = {SEED_ALPHA}) finds the observed mean "
    "difference with 80 % probability, and the facts right at both snapshots (pooled over "
    f"seeds; how many there are now) at which McNemar's test reaches p < {FACT_ALPHA} with "
    "80 % probability at the observed rates; – where the effect is zero.")


def _count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}".replace(",", " ")


def _p(value: float) -> str:
    return "<0.0001" if value < 1e-4 else f"{value:.2g}" if value < 0.01 else f"{value:.3f}"


def paired_rows(results: list, methods: list[str], references: list[str],
                split: str = "test") -> list[dict]:
    """Every method against every reference present, per unknown fraction: the per-seed
    difference of lasting losses and the pooled McNemar counts (module docstring).

    Args:
        results: The grid's cells (``tables.CellResult``: method, unknown fraction, seed,
            run folder, summary).
        methods: Method names, in table order.
        references: The methods to pair with (those in ``methods``).
        split: ``test`` or ``val``.
    """
    cells = {(r.method, r.unknown_fraction, r.seed): r for r in results}
    outcomes: dict = {}

    def facts(key):
        if key not in outcomes:
            outcomes[key] = fact_outcomes(cells[key].summary, cells[key].run_dir, split)
        return outcomes[key]

    rows, shown = [], set()
    for ref in (r for r in references if r in methods):
        for method in (m for m in methods if m != ref and frozenset((m, ref)) not in shown):
            shown.add(frozenset((method, ref)))  # each pair once: A against B, not B against A
            ref_fractions = {k[1] for k in cells if k[0] == ref}
            for x in sorted({k[1] for k in cells if k[0] == method}):
                # the reference at the same X, or at the one X it pins (the Known-only control)
                rx = x if x in ref_fractions else next(iter(ref_fractions)) \
                    if len(ref_fractions) == 1 else None
                seeds = sorted(k[2] for k in cells if k[:2] == (method, x)
                               and (ref, rx, k[2]) in cells)
                pairs = [(lasting_loss(cells[(method, x, s)].summary, split),
                          lasting_loss(cells[(ref, rx, s)].summary, split)) for s in seeds]
                pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
                counts = [discordant(facts((method, x, s)), facts((ref, rx, s))) for s in seeds
                          if facts((method, x, s)) is not None
                          and facts((ref, rx, s)) is not None]
                only_method, only_ref, shared = (sum(c[i] for c in counts) for i in (0, 1, 2))
                rows.append({
                    "method": method, "reference": ref, "unknown_fraction": x,
                    "reference_fraction": rx,
                    "seeds": len(seeds),
                    "difference": paired_difference([a for a, _ in pairs], [b for _, b in pairs]),
                    "only_method": only_method if counts else None,
                    "only_reference": only_ref if counts else None,
                    "mcnemar_p": mcnemar_exact(only_method, only_ref) if counts else None,
                    "shared": shared if counts else None,
                    "seeds_for_power": _seeds_for(pairs),
                    "facts_for_power": facts_needed(only_method, only_ref, shared)
                    if counts else None})
    return rows


def paired_section(results: list, methods: list[str], references: list[str],
                   split: str = "test") -> list[str]:
    """The *Paired comparisons* section of ``results.md`` (``paired_rows``); none when no
    reference is in the grid."""
    rows = paired_rows(results, methods, references, split)
    if not rows:
        return []
    lines = ["", "## Paired comparisons", "", PAIRED_TEXT, "",
             ("| method (A) | against (B) | unknown fraction | seeds | Δ lasting loss "
              "| 95 % interval | paired t p | forgotten only by A / only by B | McNemar p "
              "| seeds for 80 % power | facts for 80 % power (now) |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d = r["difference"]
        diff = ["–", "–", "–"] if d is None else [
            f"{d.mean:+.3f}", f"[{d.low:+.3f}, {d.high:+.3f}]", _p(d.p)]
        counts = "–" if r["only_method"] is None else f"{r['only_method']} / {r['only_reference']}"
        mcnemar = "–" if r["mcnemar_p"] is None else _p(r["mcnemar_p"])
        ref = r["reference"] if r["reference_fraction"] in (None, r["unknown_fraction"]) \
            else f"{r['reference']} (X = {r['reference_fraction']:g})"
        power = [_count(r["seeds_for_power"]), "–" if r["shared"] is None else
                 f"{_count(r['facts_for_power'])} ({r['shared']})"]
        lines.append(f"| {r['method']} | {ref} | {r['unknown_fraction']:g} | "
                     f"{r['seeds']} | " + " | ".join([*diff, counts, mcnemar, *power]) + " |")
    return lines
