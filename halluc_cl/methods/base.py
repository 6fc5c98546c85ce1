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
    """

    logits: Tensor
    attention_mask: Tensor
    labels: Tensor


@dataclass
class StepOutputs:
    """What a plugin's ``penalty`` sees of one SFT step (built by the module).

    Attributes:
        logits: Student logits on the SFT batch, ``[B, T, V]``.
        loss: The SFT loss of the batch.
        sft_epoch: 1 in the first epoch after the warm-up (``None``: not counted).
        extra: The extra inputs' outputs, when a plugin ``uses_extra_inputs``.
    """

    logits: Tensor
    loss: Tensor | None = None
    sft_epoch: int | None = None
    extra: ExtraOutputs | None = None


class Method:
    """A method that shapes SFT: a penalty added to the loss (distillation, L2, EWC,
    replay), a transform of the model or of what trains (LoRA, freezing), or both.

    Subclasses set ``name`` (its penalty is logged as ``reg/<name>``). A method that reads
    the snapshot teacher owns it (``methods/teacher.py``): it asks the context for it in
    ``on_snapshot`` and again in ``on_resume``. Penalties apply after the warm-up, once the
    snapshot exists. Every hook but ``penalty`` is given the fit's ``FitContext``: what a
    method may use.
    """

    name: str = "method"
    uses_extra_inputs: bool = False  # wants student logits on data.extra_per_batch inputs
    setup_order: int = 2  # setup/on_snapshot run in this order: 0 wraps the model, 1 freezes

    def make_teacher(self, context: FitContext):
        """A live teacher this method provides instead of a frozen copy of the student (LoRA's
        adapter-off student), or ``None``."""
        return

    def setup(self, context: FitContext) -> None:
        """Called once per fit, before training (freeze parameters, wrap the model ...)."""

    def on_snapshot(self, context: FitContext) -> None:
        """Called when the end-of-warm-up snapshot is taken (capture anchors, Fisher, the
        teacher ...), in ``setup_order``."""

    def on_resume(self, context: FitContext) -> None:
        """Called when a run resumes after the snapshot, once the method's state is loaded
        and the student is on its device: rebuild what the checkpoint does not hold (a live
        teacher)."""

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

