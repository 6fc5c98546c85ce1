"""Test-only callback that interrupts a fit at a chosen training step (``--trainer.callbacks``
with ``class_path: interrupt_helpers.SignalAt``; the folder of this file must be importable)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import lightning as L


class SignalAt(L.Callback):
    """At the start of training step ``step``: send ``signal`` to this process ``times`` times,
    or with ``ready_file``, create that file and wait (up to ``timeout`` s) for a signal sent
    from outside. ``run_contains``: only in a run folder whose path contains it; ``rank``:
    only in that process of a several-process fit."""

    def __init__(self, step: int, signal: str = "SIGTERM", times: int = 1,
                 ready_file: str | None = None, run_contains: str | None = None,
                 timeout: float = 120.0, rank: int | None = None) -> None:
        self.step, self.signum, self.times = step, getattr(signal_module, signal), times
        self.ready_file, self.run_contains, self.timeout = ready_file, run_contains, timeout
        self.fired = False
        self.rank = rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.fired or trainer.global_step != self.step:
            return
        if self.rank is not None and trainer.global_rank != self.rank:
            return
        if self.run_contains is not None and self.run_contains not in str(trainer.log_dir):
            return
        self.fired = True
        if self.ready_file is None:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)
            return
        from halluc_cl.runtime.signals import GUARD

        Path(self.ready_file).touch()
        deadline = time.monotonic() + self.timeout
        while GUARD.pending is None and time.monotonic() < deadline:
            time.sleep(0.02)


signal_module = signal
