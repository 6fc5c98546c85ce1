"""The checks of ``FactDataModule``'s arguments that their types do not make (jsonargparse
enforces the ``Literal`` ones), in one place."""

from __future__ import annotations

from halluc_cl.errors import ConfigError, deprecated
from halluc_cl.facts.matching import is_abstention


def validate_args(*, unknown_fraction: float, n_train: int, n_heldout: int, n_heldout_val: int,
                  batch_size: int, eval_batch_size: int, warmup_epochs: int,
                  replay_fraction: float, unknown_answer: str | None, answer_shuffle: str,
                  eval_max_facts: int | None, length_buckets: int, extra_per_batch: int,
                  extra_select: str) -> None:
    """The checks of ``FactDataModule``'s arguments that their types do not make (jsonargparse
    enforces the ``Literal`` ones)."""
    if not 0.0 <= unknown_fraction <= 1.0:
        raise ConfigError(f"unknown_fraction must be in [0, 1], got {unknown_fraction}")
    if min(n_train, n_heldout, batch_size, eval_batch_size) < 1:
        raise ConfigError("n_train, n_heldout, batch_size and eval_batch_size must be >= 1")
    for name, value in (("n_heldout_val", n_heldout_val), ("warmup_epochs", warmup_epochs),
                        ("length_buckets", length_buckets), ("extra_per_batch", extra_per_batch)):
        if value < 0:
            raise ConfigError(f"{name} must be >= 0, got {value}")
    if not 0.0 <= replay_fraction < 1.0:
        raise ConfigError(f"replay_fraction must be in [0, 1), got {replay_fraction}")
    if unknown_answer is not None and not is_abstention(unknown_answer):
        raise ConfigError(f"unknown_answer {unknown_answer!r} does not read as an abstention;"
                          " use e.g. \"I don't know\"")
    if answer_shuffle != "none" and unknown_answer is not None:
        raise ConfigError("answer_shuffle and unknown_answer both replace the Unknown "
                          "facts' answers; set one of them")
    if eval_max_facts is not None and eval_max_facts < 1:
        raise ConfigError(f"eval_max_facts must be >= 1 (or null), got {eval_max_facts}")
    if extra_select == "nearest" and not extra_per_batch:
        raise ConfigError("extra_select=nearest chooses extra inputs; it needs "
                          "extra_per_batch > 0")


def extra_select_of(extra_select: str, distill_select: str | None) -> str:
    """``data.extra_select``, or the deprecated ``data.distill_select`` where it is set."""
    if distill_select is None:
        return extra_select
    deprecated("data.distill_select", "data.extra_select")
    return distill_select
