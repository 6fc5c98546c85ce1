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


class ExactMatchAccuracy(Metric):
    """Share of facts answered correctly (greedy exact match against aliases)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("correct", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, correct: Tensor) -> None:
        self.correct += correct.long().sum()
        self.total += correct.numel()

    def compute(self) -> Tensor:
        return _ratio(self.correct, self.total)


class _ReferenceConditioned(Metric):
    """Counts outcomes among facts the reference (snapshot) model answered correctly."""

    is_differentiable = False
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("reference_correct", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _selected(self, now_correct: Tensor, abstained: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, reference_correct: Tensor, now_correct: Tensor, abstained: Tensor) -> None:
        ref = reference_correct.bool()
        self.reference_correct += ref.long().sum()
        self.count += (ref & self._selected(now_correct.bool(), abstained.bool())).long().sum()

    def compute(self) -> Tensor:
        return _ratio(self.count, self.reference_correct)


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
