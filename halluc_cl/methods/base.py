"""The method interface (docs/methods.md): what every method of ``model.methods`` is."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from halluc_cl.methods.context import FitContext


@dataclass
class ExtraOutputs:
    """The student (and teacher) on a batch's extra inputs: inputs that carry no new fact,
    ``data.extra_per_batch`` of them per batch (``halluc_cl/data/extra_inputs.py``).

    Attributes:
        logits: Student logits ``[E, T, V]``.
        attention_mask: ``[E, T]``, 1 on real tokens.
        labels: ``[E, T]``, the answer tokens (``IGNORE_INDEX`` elsewhere).
        teacher_logits: The snapshot teacher's logits, when a plugin that uses extra inputs
            ``needs_teacher``.
    """

    logits: Tensor
    attention_mask: Tensor
    labels: Tensor
    teacher_logits: Tensor | None = None


@dataclass
class StepOutputs:
    """What a plugin's ``penalty`` sees of one SFT step (built by the module).

    Attributes:
        logits: Student logits on the SFT batch, ``[B, T, V]``.
        loss: The SFT loss of the batch.
        sft_epoch: 1 in the first epoch after the warm-up (``None``: not counted).
        teacher_logits: The snapshot teacher's logits on the SFT batch, when a plugin
            ``wants_teacher_logits``.
        extra: The extra inputs' outputs, when a plugin ``uses_extra_inputs``.
    """

    logits: Tensor
    loss: Tensor | None = None
    sft_epoch: int | None = None
    teacher_logits: Tensor | None = None
    extra: ExtraOutputs | None = None


class Method:
    """A method that shapes SFT: a penalty added to the loss (distillation, L2, EWC,
    replay), a transform of the model or of what trains (LoRA, freezing), or both.

    Subclasses set ``name`` (its penalty is logged as ``reg/<name>``) and ``needs_teacher``
    (the module then keeps a frozen snapshot teacher and passes its logits as
    ``outputs.teacher_logits``). Penalties apply after the warm-up, once the snapshot exists.
    Every hook but ``penalty`` is given the fit's ``FitContext``: what a method may use.
    """

    name: str = "method"
    needs_teacher: bool = False
    uses_extra_inputs: bool = False  # wants student (and teacher) logits on data.extra_per_batch inputs
    setup_order: int = 2  # setup/on_snapshot run in this order: 0 wraps the model, 1 freezes

    @property
    def wants_teacher_logits(self) -> bool:
        """Whether this step's ``outputs`` must hold ``teacher_logits`` (default: needs_teacher)."""
        return self.needs_teacher

    def make_teacher(self, context: FitContext):
        """A teacher this method provides instead of a frozen copy of the student, or ``None``."""
        return

    def setup(self, context: FitContext) -> None:
        """Called once per fit, before training (freeze parameters, wrap the model ...)."""

    def on_snapshot(self, context: FitContext) -> None:
        """Called when the end-of-warm-up snapshot is taken (capture anchors, Fisher ...),
        before the teacher is built."""

    def penalty(self, batch: dict, outputs: StepOutputs) -> Tensor | None:
        """Extra loss for one training batch, or ``None`` (the default: a plugin that only
        changes the model, such as freezing or LoRA, adds none).

        Args:
            batch: The training batch (``input_ids``, ``attention_mask``, ``labels``,
                ``is_unknown``).
            outputs: The student's outputs on it, and what this plugin asked for.
        """
        return None

    def before_optimizer_step(self, context: FitContext) -> None:
        """Called after the backward pass and before the optimizer step of every SFT step
        (gradients are in ``p.grad``): a plugin may add its gradient here instead of a loss
        term."""

    def state_dict(self) -> dict:
        """State saved in the Lightning checkpoint."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""

