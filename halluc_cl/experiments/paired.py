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
    the warm-up's end minus the mean of its last ``window`` evaluations after it (from the
    history, so summaries written before the ``snapshot`` field give it too)."""
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


def discordant(a: dict[str, bool], b: dict[str, bool]) -> tuple[int, int]:
    """Facts right at both snapshots forgotten under ``a`` only, and under ``b`` only."""
    both = a.keys() & b.keys()
    return (sum(a[i] and not b[i] for i in both), sum(b[i] and not a[i] for i in both))
