"""The checks a fit's settings pass: ``FactSFTModule``'s own arguments when it is built
(``validate_args``, ``methods_of``), and the whole fit's before its first step
(``FactSFTModule.setup``). Each refuses, with one sentence, a fit that would run but measure
nothing or something else."""

from __future__ import annotations

import math

from halluc_cl.errors import ConfigError, deprecated


def warmup_steps(trainer, warmup_epochs: int, batches: int | None) -> int | None:
    """Optimizer steps of the whole warm-up of ``batches`` batches an epoch, as the trainer
    will count them (after ``limit_train_batches`` and ``accumulate_grad_batches``); ``None``
    when the number of batches is not known (no data module connected)."""
    if batches is None:
        return None
    limit = trainer.limit_train_batches
    batches = min(batches, limit) if isinstance(limit, int) else int(batches * limit)
    return warmup_epochs * math.ceil(batches / trainer.accumulate_grad_batches)


def check_schedule(trainer, warmup_epochs: int, batches: int | None) -> None:
    """Refuse a fit that ends within the warm-up: it would train on no new fact and write a
    summary of the warm-up alone. ``trainer.max_epochs`` of -1 (or ``None`` with
    ``max_steps``) is unlimited; ``max_steps`` must then reach past the warm-up's steps
    (checked when ``batches``, a warm-up epoch's batches, is known)."""
    max_epochs = trainer.max_epochs
    if max_epochs is not None and 0 <= max_epochs <= warmup_epochs:
        raise ConfigError(
            f"trainer.max_epochs={max_epochs} ends the fit within the warm-up "
            f"(model.warmup_epochs={warmup_epochs}): no SFT epoch would run, and a warm-up "
            f"alone is not a fit result; set trainer.max_epochs above {warmup_epochs}")
    steps = warmup_steps(trainer, warmup_epochs, batches)
    if steps is not None and 0 <= trainer.max_steps <= steps:
        raise ConfigError(
            f"trainer.max_steps={trainer.max_steps} ends the fit within the warm-up "
            f"(model.warmup_epochs={warmup_epochs} takes {steps} optimizer step(s)): no SFT "
            f"step would run; set trainer.max_steps above {steps}, or to -1")


def check_fit(trainer, warmup_epochs: int, batches: int | None, wants_extra: bool,
              has_extra: bool) -> None:
    """Every check of a fit: its schedule, an evaluation every epoch (the warm-up's end is
    the reference), and extra inputs exactly when a method uses them."""
    check_schedule(trainer, warmup_epochs, batches)
    if trainer.check_val_every_n_epoch not in (None, 1):
        raise ConfigError("trainer.check_val_every_n_epoch must be 1: the hallucination "
                          "reference is the evaluation at the end of the warm-up")
    if wants_extra != has_extra:
        raise ConfigError(
            "KLSelfDistillation extra_weight > 0 and ReplayLoss need data.extra_per_batch > 0"
            if wants_extra else "data.extra_per_batch > 0 but no method uses extra inputs "
            "(set KLSelfDistillation extra_weight > 0, or add ReplayLoss)")


def validate_args(warmup_epochs: int, dtype: str, lasting_window: int) -> None:
    """The checks of ``FactSFTModule``'s arguments that their types do not make (jsonargparse
    enforces the ``Literal`` ones)."""
    if warmup_epochs < 1:
        raise ConfigError("warmup_epochs must be >= 1: the snapshot and the hallucination "
                          "reference are taken at the end of the warm-up")
    if dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"dtype must be float32 or bfloat16, got {dtype!r}")
    if lasting_window < 1:
        raise ConfigError(f"lasting_window must be >= 1, got {lasting_window}")


def methods_of(methods: list | None, regularizers: list | None) -> list:
    """The fit's methods, given under ``methods`` or under the deprecated ``regularizers``."""
    if regularizers is not None:
        if methods is not None:
            raise ConfigError("model.regularizers is the old name of model.methods; set one")
        deprecated("model.regularizers", "model.methods")
        methods = regularizers
    return list(methods or [])
