"""Evaluation hooks of ``FactSFTModule``: per-split exact match, hallucination and abstention
rates against the warm-up-end reference, the held-out decline from its peak, and
representation drift, computed at every validation (and test) epoch.

The module (``models/module.py``) provides the state these hooks read and write:
``student``, ``tokenizer``, ``max_new_tokens``, ``eval_method``, ``want_prediction_text``,
``drift_layer``, the torchmetrics (``accuracy``, ``hallucination``, ``abstain``,
``new_fact_abstain``), ``reference``, ``drift_reference``, ``history`` and
``last_predictions``.
"""

from __future__ import annotations

import torch

from halluc_cl.analysis.drift import cosine_drift, last_token_states
from halluc_cl.metrics.hallucination import relative_decline
from halluc_cl.models.evaluation import answer_batch

SPLIT_METRIC = {"heldout_known": "heldout_known_acc", "unknown_train": "new_fact_acc",
                "known_train": "known_train_acc"}


class EvaluationHooks:
    """Validation and test hooks (a mixin placed before ``LightningModule``)."""

    def on_validation_epoch_start(self) -> None:
        self.last_predictions = []
        self._eval_states = {}

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        answers, correct, abstained = answer_batch(
            self.student, self.tokenizer, batch, self.max_new_tokens, self.eval_method,
            want_text=self.want_prediction_text)
        facts, split = batch["facts"], batch["split"]
        correct, abstained = torch.tensor(correct), torch.tensor(abstained)
        self.accuracy[split].update(correct)
        if split == "unknown_train":
            self.new_fact_abstain.update(abstained)
        if split == "heldout_known" and self.drift_layer is not None:
            states = last_token_states(self.student, batch["input_ids"], batch["attention_mask"],
                                       self.drift_layer).cpu()
            self._eval_states.update({f.id: h for f, h in zip(facts, states)})
        if split == "heldout_known" and self.reference:
            ref = torch.tensor([self.reference.get(f.id, False) for f in facts])
            self.hallucination.update(ref, correct, abstained)
            self.abstain.update(ref, correct, abstained)
        self.last_predictions.extend(
            {"id": f.id, "split": split, "question": f.question, "answer": f.object,
             "prediction": a, "correct": bool(c), "abstained": bool(ab)}
            for f, a, c, ab in zip(facts, answers, correct.tolist(), abstained.tolist()))

    test_step = validation_step
    on_test_epoch_start = on_validation_epoch_start

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            self._reset_metrics()
            return
        fitting = self.trainer.state.fn == "fit"
        metrics = self._compute_metrics()
        if fitting and self.current_epoch == self.warmup_epochs - 1:
            self.reference = {p["id"]: p["correct"] for p in self.last_predictions
                              if p["split"] == "heldout_known"}
            self.drift_reference = dict(self._eval_states)
        ids = [i for i in self.drift_reference if i in self._eval_states]
        if ids:
            metrics["heldout_drift"] = float(cosine_drift(
                torch.stack([self._eval_states[i] for i in ids]),
                torch.stack([self.drift_reference[i] for i in ids])))
        acc = metrics.get("heldout_known_acc")
        if acc is not None and (self.current_epoch >= self.warmup_epochs - 1 or not fitting):
            peaks = [h["heldout_known_acc"] for h in self.history
                     if h["epoch"] >= self.warmup_epochs - 1] + [acc]
            metrics["heldout_known_peak"] = max(peaks)
            metrics["heldout_known_decline"] = relative_decline(max(peaks), acc)
        self.log_dict({k: float(v) for k, v in metrics.items()})
        if fitting:
            self.history.append({"epoch": self.current_epoch, **metrics})

    def on_test_epoch_end(self) -> None:
        metrics = self._compute_metrics()
        self.log_dict({f"test/{k}": float(v) for k, v in metrics.items()})

    def _compute_metrics(self) -> dict[str, float]:
        metrics = {}
        for split, name in SPLIT_METRIC.items():
            if self.accuracy[split].update_count:
                metrics[name] = float(self.accuracy[split].compute())
        if self.hallucination.update_count:
            metrics["hallucination_rate"] = float(self.hallucination.compute())
            metrics["abstain_rate"] = float(self.abstain.compute())
        if self.new_fact_abstain.update_count:
            metrics["new_fact_abstain_rate"] = float(self.new_fact_abstain.compute())
        self._reset_metrics()
        return metrics

    def _reset_metrics(self) -> None:
        for m in [*self.accuracy.values(), self.hallucination, self.abstain,
                  self.new_fact_abstain]:
            m.reset()
