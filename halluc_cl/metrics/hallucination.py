"""Hallucination metrics in torchmetrics, with integer ``sum`` states (docs/metrics.md).

Example::

    >>> import torch
    >>> m = HallucinationRate()
    >>> m.update(reference_correct=torch.tensor([True, True, False]),
    ...          now_correct=torch.tensor([True, False, False]),
    ...          abstained=torch.tensor([False, False, False]))
    >>> float(m.compute())
    0.5
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


def _ratio(num: Tensor, den: Tensor) -> Tensor:
    return num.float() / den if den > 0 else torch.tensor(float("nan"), device=num.device)


class _CountRatio(Metric):
    """One integer count over another (NaN when the second is 0); ``COUNTS`` names the two
    states, numerator first."""

    is_differentiable = False
    full_state_update = False
    COUNTS: tuple[str, str]

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        for name in self.COUNTS:
            self.add_state(name, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def compute(self) -> Tensor:
        numerator, denominator = (getattr(self, name) for name in self.COUNTS)
        return _ratio(numerator, denominator)


class ExactMatchAccuracy(_CountRatio):
    """Share of facts answered correctly (greedy exact match against aliases)."""

    higher_is_better = True
    COUNTS = ("correct", "total")

    def update(self, correct: Tensor) -> None:
        self.correct += correct.long().sum()
        self.total += correct.numel()


class _ReferenceConditioned(_CountRatio):
    """Counts outcomes among facts the reference (snapshot) model answered correctly."""

    COUNTS = ("count", "reference_correct")

    def _selected(self, now_correct: Tensor, abstained: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, reference_correct: Tensor, now_correct: Tensor, abstained: Tensor) -> None:
        ref = reference_correct.bool()
        self.reference_correct += ref.long().sum()
        self.count += (ref & self._selected(now_correct.bool(), abstained.bool())).long().sum()


class HallucinationRate(_ReferenceConditioned):
    """Among facts the reference answered correctly, the share now answered wrongly
    (abstentions excluded)."""

    higher_is_better = False

    def _selected(self, now_correct: Tensor, abstained: Tensor) -> Tensor:
        return ~now_correct & ~abstained


class AbstainRate(_ReferenceConditioned):
    """Among facts the reference answered correctly, the share now answered "I don't know"."""

    higher_is_better = False

    def _selected(self, now_correct: Tensor, abstained: Tensor) -> Tensor:
        return ~now_correct & abstained
