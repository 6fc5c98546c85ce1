"""What a method's hooks are given: one typed ``FitContext`` (DESIGN §5).

The module builds a context for every hook call (``FactSFTModule.fit_context``); the data
module reaches methods only through the ``FitData`` view, which whoever pairs the two hands
to the module once (``FactSFTModule.connect``: the CLI, the API, a test), as litgpt's
``DataModule.connect`` is handed its tokenizer. A method never reads the trainer, looks for
its partners with ``getattr`` or touches another object's private state: what it needs is a
field here, and a method that needs the data says so with ``FitContext.require_data``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from halluc_cl.errors import ConfigError


class FitData(Protocol):
    """The data module as the module and the methods see it (``FactDataModule`` is one).

    Attributes:
        extra_per_batch: Extra inputs attached to every SFT batch after the warm-up.
        extra_source: Their kind: ``questions``, ``qa`` or ``statements``.
        extra_select: Which pool facts they are: ``random`` or ``nearest``.
        answer_shuffle: ``none``, ``fixed`` or ``epoch`` (the answers of the Unknown facts).
        extra_inputs: The pool the extra inputs come from (``None`` without extra inputs).
    """

    extra_per_batch: int
    extra_source: str
    extra_select: str
    answer_shuffle: str
    extra_inputs: Any

    def warmup_batches(self) -> int:
        """Training batches of one warm-up epoch."""

    def known_samples(self, n: int) -> list[dict]:
        """Up to ``n`` Known training facts, each a one-example training batch."""

    def cache_examples(self) -> list[tuple[str, dict]]:
        """Every example an SFT epoch can serve, by the key its batches carry."""

    def collate_train(self, rows: list[dict]) -> dict:
        """Training rows as one padded batch."""

    def rank_neighbours(self, states: Callable[[list[list[int]]], Tensor]) -> None:
        """Rank the pool for every Unknown training fact by the given states."""

    def protocol(self) -> dict:
        """What ``summary.json`` records of the split."""

    def check_context(self, limit: int, max_new_tokens: int, training: bool) -> None:
        """Refuse facts that do not fit a context of ``limit`` positions."""


CPU = torch.device("cpu")


def _no_teacher() -> None:
    """The teacher of a context built outside a fit: there is no snapshot to read."""
    raise ConfigError("a live snapshot teacher exists only in a fit (FactSFTModule)")


def _no_log(name: str, value: Tensor) -> None:
    """The ``FitContext.log`` of a context built outside a fit: nothing is logged."""


@dataclass
class FitContext:
    """Everything a method's ``setup``, ``on_snapshot``, ``make_teacher`` and
    ``before_optimizer_step`` may use.

    Attributes:
        student: The model being fine-tuned. A method that wraps it (LoRA) assigns the
            wrapped model here; the module takes it back after the hook.
        tokenizer: The student's tokenizer.
        data: The connected data module's view, or ``None`` when none is connected.
        device: Where the student's weights are.
        rank: This process's rank.
        world: The number of processes.
        zero_stage: The DeepSpeed ZeRO stage (``None`` without DeepSpeed).
        fsdp: Whether FSDP shards the student (``runtime/fsdp.py``): no whole weights
            outside a block's forward.
        compile: Whether the module compiles the student's forward (``model.compile``).
        add_cost: Counts tokens through the student and the teacher
            (``FactSFTModule.add_cost``).
        log: Logs a method's value on the logger's steps (no-op outside a fit).
        optimizer_state: The optimizer's per-parameter state (``None`` before the optimizer
            exists).
        snapshot_teacher: The fit's live teacher at the snapshot (a frozen copy of the
            student, or LoRA's adapter-off student), for a method that distils from it; called
            in ``on_snapshot``.
        restore_teacher: The same teacher on a resume, with the snapshot's weights from
            beside the checkpoint; called in ``on_resume``.
    """

    student: nn.Module
    tokenizer: Any = None
    data: FitData | None = None
    device: torch.device = CPU
    rank: int = 0
    world: int = 1
    zero_stage: int | None = None
    fsdp: bool = False
    compile: bool = False
    add_cost: Callable[..., None] = lambda **_: None
    log: Callable[[str, Tensor], None] = _no_log
    optimizer_state: Callable[[], dict] | None = None
    snapshot_teacher: Callable[[], Any] = lambda: _no_teacher()
    restore_teacher: Callable[[], Any] = lambda: _no_teacher()

    def require_data(self, who: str) -> FitData:
        """The data view, or a ``ConfigError`` naming ``who`` needed it."""
        if self.data is None:
            raise ConfigError(f"{who} needs the fit's FactDataModule (FactSFTModule.connect)")
        return self.data
