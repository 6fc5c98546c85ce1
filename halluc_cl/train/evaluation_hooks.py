"""Evaluation hooks of ``FactSFTModule``: per-split exact match, hallucination and abstention
rates against the warm-up-end reference, losses measured from that reference, per fact
(``metrics/snapshot.py``), the held-out decline from its peak (``metrics/decline.py``) and
representation drift (``metrics/drift.py``), computed at every validation (and test) epoch.

The module (``train/module.py``) provides the state these hooks read and write, declared
with its types on ``EvaluationHooks`` (the torchmetrics are built with
``sync_on_compute=False``: they are updated with every process's outcomes already). Batches
carry ``positions``, each fact's index in its split.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchmetrics import Metric

from halluc_cl.distributed import gather_lists
from halluc_cl.metrics.decline import PeakDecline, peak_and_decline
from halluc_cl.metrics.drift import RepresentationDrift, last_token_states
from halluc_cl.metrics.snapshot import lasting
from halluc_cl.train.evaluation import answer_batch

SPLIT_METRIC = {"heldout_test": "heldout_test_acc", "heldout_val": "heldout_val_acc",
                "unknown_train": "new_fact_acc", "known_train": "known_train_acc"}
EVAL_ORDER = {s: i for i, s in enumerate(SPLIT_METRIC)}  # the data module's split order
# held-out split -> prefix of its hallucination / abstention rates
HELDOUT_RATE_PREFIX = {"heldout_test": "", "heldout_val": "val_"}
# split -> the stem of its measures from the snapshot (``heldout_test_snapshot_loss``, ...)
SPLIT_STEM = {split: name.removesuffix("_acc") for split, name in SPLIT_METRIC.items()}


class EvaluationHooks:
    """Validation and test hooks (a mixin placed before ``LightningModule``).

    Each step records every fact's outcome; at the end of the evaluation the outcomes of all
    processes are gathered (``halluc_cl.distributed.gather_lists``) and the metrics computed
    from that one list on every process. Per-fact outcomes, not metric sums, are gathered:
    the data module pads each split with repeated batches so that every process runs as many
    (``FactDataModule._eval_loader``), and only the fact's identity drops the repeats. The
    same list gives
    every process the predictions, the hallucination reference and the drift states, so the
    numbers, the checkpoints and ``summary.json`` do not depend on the number of processes.
    """

    # what the module provides (``FactSFTModule.__init__``; the model from ``load_model``)
    student: nn.Module
    tokenizer: object  # a transformers tokenizer
    max_new_tokens: int
    eval_method: str  # ``train.evaluation.EvalMethod``
    want_prediction_text: bool
    drift_layer: int | None
    warmup_end_epoch: int  # the last warm-up epoch
    accuracy: nn.ModuleDict  # split -> ExactMatchAccuracy
    hallucination: nn.ModuleDict  # held-out split -> HallucinationRate
    abstain: nn.ModuleDict  # held-out split -> AbstainRate
    format_rate: nn.ModuleDict  # held-out split -> ExactMatchAccuracy of the answer format
    new_fact_abstain: Metric
    from_snapshot: nn.ModuleDict  # split -> SnapshotReferenced
    lasting_window: int  # evaluations the lasting loss averages
    peak: PeakDecline
    drift: RepresentationDrift
    # what the hooks write
    reference: dict[str, bool]  # fact id -> answered correctly at the warm-up's end
    drift_reference: dict[str, torch.Tensor]  # fact id -> hidden state at the warm-up's end
    history: list[dict]  # the metrics of every evaluation of the fit
    last_predictions: list[dict]  # every fact's outcome in the last evaluation

    def on_validation_epoch_start(self) -> None:
        self.last_predictions = []
        self._eval_states = {}
        self._outcomes: list[dict] = []

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        answers, correct, abstained = answer_batch(
            self.student, self.tokenizer, batch, self.max_new_tokens, self.eval_method,
            want_text=self.want_prediction_text)
        facts, split = batch["facts"], batch["split"]
        mark = batch.get("answer_suffix", "").strip()  # an answer format to follow, if any
        states = [None] * len(facts)
        if split == "heldout_test" and self.drift_layer is not None:
            states = list(last_token_states(self.student, batch["input_ids"],
                                            batch["attention_mask"], self.drift_layer).cpu())
        for f, pos, a, c, ab, h in zip(facts, batch["positions"], answers, correct, abstained,
                                       states):
            outcome = {"order": (EVAL_ORDER[split], pos), "state": h, "id": f.id, "split": split,
                       "question": f.question, "answer": f.object, "prediction": a,
                       "correct": bool(c), "abstained": bool(ab)}
            if mark:
                outcome["formatted"] = a is not None and a.strip().endswith(mark)
            self._outcomes.append(outcome)

    test_step = validation_step
    on_test_epoch_start = on_validation_epoch_start

    def _gather_outcomes(self) -> list[dict]:
        """Every fact's outcome, once, from every process, in split and fact order."""
        unique = {o["order"]: o for o in gather_lists(self._outcomes)}
        self._outcomes = []
        outcomes = [unique[k] for k in sorted(unique)]
        self._eval_states = {o["id"]: o["state"] for o in outcomes if o["state"] is not None}
        self.last_predictions = [{k: v for k, v in o.items() if k not in ("order", "state")}
                                 for o in outcomes]
        return outcomes

    def on_validation_epoch_end(self) -> None:
        outcomes = self._gather_outcomes()
        if self.trainer.sanity_checking:
            return
        fitting = self.trainer.state.fn == "fit"
        metrics = self._metrics_of(outcomes)
        if fitting and self.current_epoch == self.warmup_end_epoch:
            self.reference = {p["id"]: p["correct"] for p in self.last_predictions}
            self.drift_reference = dict(self._eval_states)
        ids = [i for i in self.drift_reference if i in self._eval_states]
        if ids:
            self.drift.update(torch.stack([self._eval_states[i] for i in ids]),
                              torch.stack([self.drift_reference[i] for i in ids]))
            metrics["heldout_drift"] = float(self.drift.compute())
            self.drift.reset()
        if fitting and self.current_epoch >= self.warmup_end_epoch:
            self.peak.update(metrics.get("heldout_val_acc"), metrics.get("heldout_test_acc"))
            metrics.update(self.peak.compute())
        elif not fitting:  # a model or checkpoint evaluated on its own: against its history
            metrics.update(peak_and_decline(self._since_warmup() + [metrics]))
        metrics.update(self._lasting(metrics))
        # every process holds the same values (computed from the gathered outcomes)
        self.log_dict({k: float(v) for k, v in metrics.items()}, sync_dist=False)
        if fitting:
            self.history.append({"epoch": self.current_epoch, **metrics})

    def _since_warmup(self) -> list[dict]:
        return [h for h in self.history if h["epoch"] >= self.warmup_end_epoch]

    def _lasting(self, metrics: dict) -> dict[str, float]:
        """``<stem>_lasting_loss[_rel]``: the mean loss from the snapshot over the last
        ``lasting_window`` evaluations after the warm-up, this one included."""
        earlier = [h for h in self.history if h["epoch"] > self.warmup_end_epoch]
        out = {}
        for stem in SPLIT_STEM.values():
            for kind in ("loss", "loss_rel"):
                key = f"{stem}_snapshot_{kind}"
                if key in metrics:
                    values = [h[key] for h in earlier if key in h] + [metrics[key]]
                    out[f"{stem}_lasting_{kind}"] = lasting(values, self.lasting_window)
        return out

    def on_test_epoch_end(self) -> None:
        metrics = self._metrics_of(self._gather_outcomes())
        self.log_dict({f"test/{k}": float(v) for k, v in metrics.items()}, sync_dist=False)

    def _metrics_of(self, outcomes: list[dict]) -> dict[str, float]:
        """Accuracy per split, hallucination and abstention rates of the held-out splits
        against the reference, and the new facts' abstention rate, over ``outcomes``."""
        for split in SPLIT_METRIC:
            mine = [o for o in outcomes if o["split"] == split]
            if not mine:
                continue
            correct = torch.tensor([o["correct"] for o in mine])
            abstained = torch.tensor([o["abstained"] for o in mine])
            self.accuracy[split].update(correct)
            if split == "unknown_train":
                self.new_fact_abstain.update(abstained)
            if split in HELDOUT_RATE_PREFIX and self.reference:
                ref = torch.tensor([self.reference.get(o["id"], False) for o in mine])
                self.hallucination[split].update(ref, correct, abstained)
                self.abstain[split].update(ref, correct, abstained)
            if self.reference and all(o["id"] in self.reference for o in mine):
                ref = torch.tensor([self.reference[o["id"]] for o in mine])
                self.from_snapshot[split].update(ref, correct)
            if split in HELDOUT_RATE_PREFIX and "formatted" in mine[0]:
                self.format_rate[split].update(torch.tensor([o["formatted"] for o in mine]))
        metrics = {}
        for split, name in SPLIT_METRIC.items():
            if self.accuracy[split].update_count:
                metrics[name] = float(self.accuracy[split].compute())
        for split, prefix in HELDOUT_RATE_PREFIX.items():
            if self.hallucination[split].update_count:
                metrics[f"{prefix}hallucination_rate"] = float(self.hallucination[split].compute())
                metrics[f"{prefix}abstain_rate"] = float(self.abstain[split].compute())
        for split, prefix in HELDOUT_RATE_PREFIX.items():
            if self.format_rate[split].update_count:  # held-out answers in the taught format
                metrics[f"{prefix}format_rate"] = float(self.format_rate[split].compute())
        if self.new_fact_abstain.update_count:
            metrics["new_fact_abstain_rate"] = float(self.new_fact_abstain.compute())
        for split, stem in SPLIT_STEM.items():
            if self.from_snapshot[split].update_count:
                measures = self.from_snapshot[split].compute()
                measures.pop("snapshot_acc")  # the warm-up's end record holds it
                metrics.update({f"{stem}_{k}": v for k, v in measures.items()
                                if not math.isnan(v)})  # a rate over no fact
        self._reset_metrics()
        return metrics

    def _reset_metrics(self) -> None:
        for m in [*self.accuracy.values(), *self.hallucination.values(),
                  *self.abstain.values(), *self.format_rate.values(), self.new_fact_abstain,
                  *self.from_snapshot.values()]:
            m.reset()

