"""Gekhman et al.'s (2024) regression, fitted as they fit it: over every evaluation of every
model trained, not only final ones.

    accuracy (points) = β0 + β_kn · N_kn / |D| + β_unk · N_unk / |D|

where N_kn and N_unk are the Known and Unknown training facts the model answers right at that
evaluation and |D| the size of the SFT mix: with Unknown share X, N_kn / |D| =
(1 − X) · known_train_acc and N_unk / |D| = X · new_fact_acc. Every evaluation after the
warm-up of every cell of a fraction grid is one point (``halluc-cl compare --config
configs/compare/fraction.yaml``, ``fraction.md``).

The evaluations of one cell are not independent draws, so the coefficient intervals come from
a bootstrap over cells (whole cells resampled with replacement, refitted; percentile 95 %
intervals), not from the OLS formula, which would treat 24 epochs of one run as 24 runs.
Least squares is numpy's.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

# Gekhman et al. (2024), in-distribution fit (primary text); accuracy in points
PUBLISHED = {"beta_kn": 7.3, "beta_unk": -8.3, "r2": 0.86}
BOOTSTRAP_SAMPLES = 2000


class Regression(NamedTuple):
    """Coefficients ``(β0, β_kn, β_unk)``, their 95 % intervals, R² and the sample sizes."""

    coef: tuple[float, float, float]
    low: tuple[float, ...]
    high: tuple[float, ...]
    r2: float
    points: int
    cells: int


def epoch_points(summary: dict, unknown_fraction: float, split: str = "test"
                 ) -> list[tuple[float, float, float]]:
    """``(N_kn/|D|, N_unk/|D|, accuracy in points)`` of every evaluation after the warm-up
    of one cell (a split absent from the mix, X = 0, contributes 0)."""
    warmup = (summary.get("warmup_end") or {}).get("epoch", -1)
    key, x = f"heldout_{split}_acc", unknown_fraction
    points = []
    for h in summary.get("history", []):
        if h["epoch"] <= warmup or key not in h:
            continue
        kn, unk = h.get("known_train_acc"), h.get("new_fact_acc")
        if (x < 1 and kn is None) or (x > 0 and unk is None):
            continue
        points.append(((1 - x) * (kn or 0.0), x * (unk or 0.0), 100.0 * h[key]))
    return points


def _ols(points: np.ndarray) -> tuple[np.ndarray, float] | None:
    design = np.column_stack([np.ones(len(points)), points[:, :2]])
    coef, _, rank, _ = np.linalg.lstsq(design, points[:, 2], rcond=None)
    if rank < 3:
        return None
    residual = points[:, 2] - design @ coef
    total = points[:, 2] - points[:, 2].mean()
    ss_tot = float(total @ total)
    return coef, (1.0 - float(residual @ residual) / ss_tot) if ss_tot > 0 else math.nan


def regression(cells: list[list[tuple[float, float, float]]], seed: int = 0,
               samples: int = BOOTSTRAP_SAMPLES) -> Regression | None:
    """The fit over every point of every cell, with cell-bootstrap intervals; ``None`` when
    the coefficients are not identifiable (e.g. one unknown fraction only)."""
    cells = [np.asarray(c, dtype=float) for c in cells if c]
    if not cells:
        return None
    fit = _ols(np.concatenate(cells))
    if fit is None:
        return None
    coef, r2 = fit
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(samples):
        pick = rng.integers(0, len(cells), len(cells))
        refit = _ols(np.concatenate([cells[i] for i in pick]))
        if refit is not None:
            draws.append(refit[0])
    if draws:
        low, high = np.percentile(np.asarray(draws), [2.5, 97.5], axis=0)
    else:
        low = high = np.full(3, math.nan)
    return Regression(tuple(float(c) for c in coef), tuple(float(v) for v in low),
                      tuple(float(v) for v in high), r2, sum(len(c) for c in cells), len(cells))
