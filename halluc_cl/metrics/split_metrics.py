"""One torchmetrics ``MetricCollection`` per evaluated split, fed one typed record of per-fact
outcomes (``FactOutcomes``), and the split names in one place (``SPLITS``).

Every metric of an evaluation reads the same record: exact match, abstention, the answer at
the snapshot (the evaluation at the end of the warm-up) and the answer format. The
collection computes only the metrics that were updated, under the names the run logs
(``SplitNames``: ``heldout_test_acc``, ``hallucination_rate``, ``heldout_test_snapshot_loss``,
…).

Example::

    >>> import torch
    >>> m = SplitMetrics("heldout_val")
    >>> m.update(FactOutcomes(correct=torch.tensor([True, False, True]),
    ...                       abstained=torch.tensor([False, False, False]),
    ...                       reference=torch.tensor([True, True, False])))
    >>> out = m.compute()
    >>> round(out["heldout_val_acc"], 4), out["val_hallucination_rate"], out["heldout_val_forgotten"]
    (0.6667, 0.5, 1)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor
from torchmetrics import MetricCollection

from halluc_cl.metrics.hallucination import AbstainRate, ExactMatchAccuracy, HallucinationRate
from halluc_cl.metrics.snapshot import SnapshotReferenced


class SplitNames(NamedTuple):
    """What a split's metrics are called in logs, ``metrics.csv`` and ``summary.json``."""

    acc: str  # exact match
    stem: str  # of the losses from the snapshot: ``<stem>_snapshot_loss``, …
    rate_prefix: str | None  # of the hallucination / abstention / format rates (held-out only)
    abstain_share: str | None  # the share answered with an abstention phrase


# every evaluated split, in the data module's evaluation order
SPLITS = {
    "heldout_test": SplitNames("heldout_test_acc", "heldout_test", "", None),
    "heldout_val": SplitNames("heldout_val_acc", "heldout_val", "val_", None),
    "unknown_train": SplitNames("new_fact_acc", "new_fact", None, "new_fact_abstain_rate"),
    "known_train": SplitNames("known_train_acc", "known_train", None, None),
}
HELDOUT = tuple(s for s, names in SPLITS.items() if names.rate_prefix is not None)


class FactOutcomes(NamedTuple):
    """Per-fact outcomes of one split at one evaluation (bool tensors of one length).

    Attributes:
        correct: The answer matches an alias.
        abstained: The answer is an abstention phrase.
        reference: Right at the snapshot (``None`` before the snapshot, or where the
            snapshot's answers are not all known).
        formatted: The answer follows the taught format (``None`` without one).
    """

    correct: Tensor
    abstained: Tensor
    reference: Tensor | None = None
    formatted: Tensor | None = None


class SplitMetrics(MetricCollection):
    """The metrics of one split (``SPLITS``), updated with ``FactOutcomes``.

    Args:
        split: A key of ``SPLITS``.
        **kwargs: Passed to every metric (``sync_on_compute=False`` when every process
            updates with every process's outcomes already, ``metrics/gathered.py``).
    """

    def __init__(self, split: str, **kwargs) -> None:
        names = SPLITS[split]
        metrics = {"acc": ExactMatchAccuracy(**kwargs),
                   "from_snapshot": SnapshotReferenced(**kwargs)}
        if names.rate_prefix is not None:
            metrics.update(hallucination=HallucinationRate(**kwargs),
                           abstain=AbstainRate(**kwargs), format=ExactMatchAccuracy(**kwargs))
        if names.abstain_share is not None:
            metrics["abstain_share"] = ExactMatchAccuracy(**kwargs)
        super().__init__(metrics, compute_groups=False)
        self.split_names = names

    def update(self, outcomes: FactOutcomes) -> None:  # one record, each metric its part
        correct, abstained, reference = outcomes.correct, outcomes.abstained, outcomes.reference
        self["acc"].update(correct)
        if "abstain_share" in self:
            self["abstain_share"].update(abstained)
        if reference is not None:
            self["from_snapshot"].update(reference, correct)
            if "hallucination" in self:
                self["hallucination"].update(reference, correct, abstained)
                self["abstain"].update(reference, correct, abstained)
        if outcomes.formatted is not None and "format" in self:
            self["format"].update(outcomes.formatted)

    def compute(self) -> dict[str, float | int]:
        """The updated metrics under their logged names (rates over no fact left out)."""
        names, out = self.split_names, {}
        if self["acc"].update_count:
            out[names.acc] = float(self["acc"].compute())
        if "abstain_share" in self and self["abstain_share"].update_count:
            out[names.abstain_share] = float(self["abstain_share"].compute())
        if "hallucination" in self and self["hallucination"].update_count:
            out[f"{names.rate_prefix}hallucination_rate"] = float(self["hallucination"].compute())
            out[f"{names.rate_prefix}abstain_rate"] = float(self["abstain"].compute())
        if "format" in self and self["format"].update_count:
            out[f"{names.rate_prefix}format_rate"] = float(self["format"].compute())
        if self["from_snapshot"].update_count:
            measures = self["from_snapshot"].compute()
            measures.pop("snapshot_acc")  # the warm-up's end record holds it
            out.update({f"{names.stem}_{k}": v for k, v in measures.items()
                        if not math.isnan(v)})
        return out


def outcomes_of(records: list[dict], reference: dict[str, bool] | None) -> FactOutcomes:
    """``FactOutcomes`` of per-fact records (``id``, ``correct``, ``abstained`` and, with an
    answer format, ``formatted``); the reference where it holds every fact."""
    def bits(key: str) -> Tensor:
        return torch.tensor([bool(r[key]) for r in records], dtype=torch.bool)

    known = bool(reference) and all(r["id"] in reference for r in records)
    return FactOutcomes(
        correct=bits("correct"), abstained=bits("abstained"),
        reference=torch.tensor([reference[r["id"]] for r in records], dtype=torch.bool)
        if known else None,
        formatted=bits("formatted") if records and "formatted" in records[0] else None)
