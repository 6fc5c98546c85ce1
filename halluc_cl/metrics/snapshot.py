"""Losses measured from the snapshot (docs/metrics.md): each fact now against the same fact at
the end of the warm-up, as a torchmetrics ``Metric`` with integer ``sum`` states
(``SnapshotReferenced``), and the lasting form over the last evaluations (``lasting``).

For the facts of one split, with ``s`` = right at the snapshot and ``c`` = right now:

- ``snapshot_loss`` = acc(snapshot) − acc(now), in points (a fraction of the split);
  ``snapshot_loss_rel`` = that over acc(snapshot);
- ``forgotten`` = #{s and not c} (wrong or abstaining now), ``forgotten_rate`` = forgotten /
  #{s}; the hallucination rate is its non-abstaining part;
- ``gained`` = #{not s and c}, ``gained_rate`` = gained / #{not s}.

So ``snapshot_loss`` = (forgotten − gained) / n exactly. Unlike the peak-based decline, no
term is a maximum over noisy evaluations: its expectation is 0 for a run that loses nothing.

Example::

    >>> import torch
    >>> m = SnapshotReferenced()
    >>> m.update(snapshot_correct=torch.tensor([True, True, True, False]),
    ...          now_correct=torch.tensor([True, False, False, True]))
    >>> out = m.compute()
    >>> out["snapshot_loss"], out["forgotten"], out["forgotten_rate"], out["gained"]
    (0.25, 2, 0.6666666666666666, 1)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric

# what ``SnapshotReferenced.compute`` returns, in this order
MEASURES = ("snapshot_acc", "snapshot_loss", "snapshot_loss_rel", "forgotten", "forgotten_rate",
            "gained", "gained_rate")
LASTING_WINDOW = 3  # evaluations the lasting loss averages, by default


def _ratio(num: int, den: int) -> float:
    return num / den if den > 0 else math.nan


class SnapshotReferenced(Metric):
    """Per-fact outcomes now against the snapshot's, summed over the facts of one split
    (module docstring for the measures)."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in ("total", "snapshot_right", "now_right", "forgotten", "gained"):
            self.add_state(name, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, snapshot_correct: Tensor, now_correct: Tensor) -> None:
        """Add facts: right at the snapshot, and right now (an abstention is not right)."""
        s, c = snapshot_correct.bool(), now_correct.bool()
        self.total += s.numel()
        self.snapshot_right += s.long().sum()
        self.now_right += c.long().sum()
        self.forgotten += (s & ~c).long().sum()
        self.gained += (~s & c).long().sum()

    def compute(self) -> dict[str, float | int]:
        n, s, c = int(self.total), int(self.snapshot_right), int(self.now_right)
        forgotten, gained = int(self.forgotten), int(self.gained)
        snapshot_acc, loss = _ratio(s, n), _ratio(s - c, n)
        return {"snapshot_acc": snapshot_acc, "snapshot_loss": loss,
                "snapshot_loss_rel": _ratio(s - c, s),
                "forgotten": forgotten, "forgotten_rate": _ratio(forgotten, s),
                "gained": gained, "gained_rate": _ratio(gained, n - s)}


def lasting(values: list[float], window: int = LASTING_WINDOW) -> float:
    """The mean of the last ``window`` values (all of them when there are fewer); NaN for
    none.

    >>> lasting([0.0, 0.5, 0.25, 0.75], window=2)
    0.5
    """
    tail = values[-window:] if window > 0 else []
    return sum(tail) / len(tail) if tail else math.nan
