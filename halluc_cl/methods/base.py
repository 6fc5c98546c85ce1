"""The regularizer plugin interface (docs/methods.md)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor


class Regularizer(ABC):
    """A plugin that shapes SFT: a penalty added to the loss and/or setup-time changes.

    Subclasses set ``name`` (logged as ``reg/<name>``) and ``needs_teacher`` (the module then
    keeps a frozen snapshot teacher and passes its logits as ``outputs["teacher_logits"]``).
    Penalties apply after the warm-up, once the snapshot exists.
    """

    name: str = "regularizer"
    needs_teacher: bool = False
    uses_extra_inputs: bool = False  # wants student (and teacher) logits on data.extra_per_batch inputs
    setup_order: int = 2  # setup/on_snapshot run in this order: 0 wraps the model, 1 freezes

    @property
    def wants_teacher_logits(self) -> bool:
        """Whether this step's ``outputs`` must hold ``teacher_logits`` (default: needs_teacher)."""
        return self.needs_teacher

    def make_teacher(self, module):
        """A teacher this plugin provides instead of a frozen copy of the student, or ``None``."""
        return

    def setup(self, module) -> None:
        """Called once per fit, before training (freeze parameters, wrap the model ...)."""

    def on_snapshot(self, module) -> None:
        """Called when the end-of-warm-up snapshot is taken (capture anchors, Fisher ...),
        before the teacher is built."""

    @abstractmethod
    def penalty(self, batch: dict, outputs: dict) -> Tensor | None:
        """Extra loss for one training batch, or ``None``.

        Args:
            batch: The training batch (``input_ids``, ``attention_mask``, ``labels``,
                ``is_unknown``).
            outputs: ``logits`` and ``loss`` of the student, ``sft_epoch`` (1 in the first
                epoch after the warm-up), ``teacher_logits`` when ``needs_teacher``, and
                ``extra_logits`` / ``extra_attention_mask`` / ``extra_labels`` (and
                ``extra_teacher_logits`` when ``needs_teacher``) for the batch's extra
                inputs when ``uses_extra_inputs``.
        """

    def before_optimizer_step(self, module) -> None:
        """Called after the backward pass and before the optimizer step of every SFT step
        (gradients are in ``p.grad``): a plugin may add its gradient here instead of a loss
        term."""

    def state_dict(self) -> dict:
        """State saved in the Lightning checkpoint."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""
