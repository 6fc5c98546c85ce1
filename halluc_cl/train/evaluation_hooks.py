"""Evaluation hooks of ``FactSFTModule``: one ``SplitMetrics`` collection per split
(``metrics/split_metrics.py``: exact match, hallucination and abstention rates and losses
measured from the warm-up-end reference, fact by fact), the lasting loss over the last
evaluations (``metrics/snapshot.py``), the held-out decline from its peak
(``metrics/decline.py``) and representation drift (``metrics/drift.py``), computed at every
validation (and test) epoch.

The module (``train/module.py``) provides the state these hooks read and write, declared
with its types on ``EvaluationHooks`` (the metrics are built with ``sync_on_compute=False``:
they are updated with every process's outcomes already). Batches
carry ``positions``, each fact's index in its split.
"""

from __future__ import annotations

import torch
from torch import nn

from halluc_cl.distributed import gather_lists
from halluc_cl.metrics.decline import PeakDecline, peak_and_decline
from halluc_cl.metrics.drift import RepresentationDrift, last_token_states
from halluc_cl.metrics.snapshot import lasting
from halluc_cl.metrics.split_metrics import SPLITS, outcomes_of
from halluc_cl.train.evaluation import answer_batch

# split -> the name of its accuracy (``metrics/split_metrics.SPLITS`` holds every name)
SPLIT_METRIC = {split: names.acc for split, names in SPLITS.items()}
EVAL_ORDER = {s: i for i, s in enumerate(SPLITS)}  # the data module's split order
# split -> the stem of its measures from the snapshot (``heldout_test_snapshot_loss``, ...)
SPLIT_STEM = {split: names.stem for split, names in SPLITS.items()}


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
    split_metrics: nn.ModuleDict  # split -> SplitMetrics
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
        """Every split's metrics (``SplitMetrics``) over ``outcomes``: accuracy, the rates
        and losses against the reference, abstention and answer format."""
        metrics: dict[str, float] = {}
        for split, collection in self.split_metrics.items():
            mine = [o for o in outcomes if o["split"] == split]
            if mine:
                collection.update(outcomes_of(mine, self.reference))
                metrics.update(collection.compute())
            collection.reset()
        return metrics
