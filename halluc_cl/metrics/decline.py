"""Peak and relative decline of held-out Known accuracy over a fit (docs/metrics.md), as a
torchmetrics ``Metric`` (``PeakDecline``) with its functional form (``peak_and_decline``).

Two held-out splits (``data/splits.py``): ``heldout_val`` chooses, ``heldout_test`` reports.
The validation split's peak is its best accuracy since the end of the warm-up; the test
split's reference ("peak") is its accuracy at the epoch where the validation split peaked, so
no number on the test split is a maximum over test evaluations (without a validation split,
the test split's own maximum). Decline = (peak − now) / peak for each.

Example::

    >>> m = PeakDecline()
    >>> for val, test in [(0.8, 0.7), (0.9, 0.6), (0.5, 0.3)]:
    ...     m.update(val, test)
    >>> out = m.compute()
    >>> out["heldout_val_peak"], out["heldout_test_peak"], out["heldout_test_decline"]
    (0.9, 0.6, 0.5)
"""

from __future__ import annotations

import math

import torch

from halluc_cl.metrics.gathered import GatheredMetric


def relative_decline(peak: float, final: float) -> float:
    """(peak − final) / peak, the paper's headline number; 0 when the peak is 0."""
    return (peak - final) / peak if peak > 0 else 0.0


def peak_and_decline(evaluations: list[dict]) -> dict[str, float]:
    """Peak and relative decline of both held-out splits over ``evaluations`` (the
    evaluations since the end of the warm-up, the latest last; module docstring).

    Args:
        evaluations: Metrics of each evaluation, with ``heldout_val_acc`` and/or
            ``heldout_test_acc``.

    Returns:
        ``heldout_{val,test}_{peak,decline}`` for the splits every evaluation has.
    """
    out: dict[str, float] = {}
    val = [e["heldout_val_acc"] for e in evaluations if "heldout_val_acc" in e]
    test = [e.get("heldout_test_acc") for e in evaluations]
    if val and len(val) == len(evaluations):
        best = max(range(len(val)), key=val.__getitem__)  # the first epoch at the val peak
        out["heldout_val_peak"] = val[best]
        out["heldout_val_decline"] = relative_decline(val[best], val[-1])
        if test[best] is not None and test[-1] is not None:
            out["heldout_test_peak"] = test[best]
            out["heldout_test_decline"] = relative_decline(test[best], test[-1])
    elif test and all(t is not None for t in test):
        out["heldout_test_peak"] = max(test)
        out["heldout_test_decline"] = relative_decline(max(test), test[-1])
    return out


class PeakDecline(GatheredMetric):
    """``peak_and_decline`` over the evaluations it was updated with, one ``update`` per
    evaluation since the end of the warm-up.

    Its states are the accuracies in order (float64, exactly the logged values); every process
    updates it with the same values (``metrics/gathered.py``).
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("val", [], dist_reduce_fx="cat")
        self.add_state("test", [], dist_reduce_fx="cat")

    def update(self, heldout_val_acc: float | None, heldout_test_acc: float | None) -> None:
        """Add one evaluation (``None``: the split was not evaluated)."""
        for state, value in ((self.val, heldout_val_acc), (self.test, heldout_test_acc)):
            state.append(torch.tensor([math.nan if value is None else value],
                                      dtype=torch.float64))

    def compute(self) -> dict[str, float]:
        def values(state) -> list[float | None]:
            return [None if math.isnan(v) else v for v in self.concatenated(state).tolist()]

        evaluations = [{k: v for k, v in (("heldout_val_acc", val), ("heldout_test_acc", test))
                        if v is not None}
                       for val, test in zip(values(self.val), values(self.test))]
        return peak_and_decline(evaluations)
