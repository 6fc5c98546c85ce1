"""Stopping on SIGTERM or Ctrl-C (SIGINT) without losing work (docs/reliability.md).

The CLI runs every command inside ``handling_signals()``, which turns the first SIGINT or
SIGTERM into ``Interrupted``. Where stopping at once could leave half-updated state (a fit's
training loop), the signal is deferred instead: ``InterruptCheckpoint`` lets the running
training step, or the epoch's evaluation, finish, saves ``last.ckpt`` there and stops the
fit. A second signal stops at once, without a checkpoint. The CLI prints one line,
``error: interrupted (SIGTERM) ...; resume with: ...``, and exits with 128 + the signal
number: 130 after SIGINT, 143 after SIGTERM.
"""

from __future__ import annotations

import os
import shlex
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from halluc_cl.distributed import any_rank

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def resume_command(args: list[str], replace: dict[str, str]) -> str:
    """``halluc-cl <args>`` with the options in ``replace`` set to its values (both the
    ``--key value`` and ``--key=value`` forms of the old ones are dropped)."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg.split("=", 1)[0] in replace:
            skip = "=" not in arg
            continue
        kept.append(arg)
    for key, value in replace.items():
        kept += [key, value]
    return "halluc-cl " + shlex.join(kept)


class Interrupted(BaseException):
    """A command stopped by SIGINT or SIGTERM. A BaseException, like KeyboardInterrupt, so
    that ``except Exception`` lets it through.

    Attributes:
        signum: The signal.
        forced: A second signal arrived: stopped at once, without a checkpoint.
        details: Clauses of the message (where it stopped, what was kept).
        resume: Options that replace the interrupted command's own in the resume command
            (``{}``: run the same command again).
    """

    def __init__(self, signum: int, forced: bool = False) -> None:
        super().__init__(signum)
        self.signum, self.forced = int(signum), forced
        self.details: list[str] = []
        self.resume: dict[str, str] = {}

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def message(self, args: list[str]) -> str:
        """The one line the CLI prints (after ``error: ``)."""
        name = signal.Signals(self.signum).name
        head = f"interrupted ({name}{', twice: stopped at once' if self.forced else ''})"
        return "; ".join([head, *self.details, f"resume with: {resume_command(args, self.resume)}"])


class SignalGuard:
    """Where SIGINT and SIGTERM go while a command runs (one per process: ``GUARD``)."""

    def __init__(self) -> None:
        self.active = False
        self.pending: int | None = None  # a deferred signal not acted on yet
        self._deferring = 0

    def handle(self, signum: int, frame) -> None:
        if self.pending is not None or not self._deferring:
            raise Interrupted(signum, forced=self.pending is not None)
        self.pending = signum
        name = signal.Signals(signum).name
        # os.write, not print: a handler must not re-enter a buffered stream
        os.write(2, f"\nhalluc-cl: {name} received; stopping at the end of this training step "
                    "(or epoch) with a checkpoint; send it again to stop at once, without one\n"
                    .encode())

    def install(self) -> None:
        for signum in SIGNALS:
            signal.signal(signum, self.handle)

    def defer(self) -> None:
        """Record signals from now on instead of raising (until ``release``)."""
        self._deferring += 1

    def release(self) -> None:
        self._deferring = max(0, self._deferring - 1)

    def check(self) -> None:
        """Raise ``Interrupted`` for a signal that was deferred and not acted on yet."""
        if self.pending is not None:
            raise Interrupted(self.pending)


GUARD = SignalGuard()


@contextmanager
def handling_signals() -> Iterator[SignalGuard]:
    """Route SIGINT and SIGTERM to ``GUARD`` for the block (main thread only), then restore
    the previous handlers."""
    if threading.current_thread() is not threading.main_thread() or GUARD.active:
        yield GUARD
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    GUARD.active, GUARD.pending, GUARD._deferring = True, None, 0
    GUARD.install()
    try:
        yield GUARD
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        GUARD.active, GUARD.pending, GUARD._deferring = False, None, 0


def last_checkpoint_path(trainer: L.Trainer) -> Path:
    """Where the fit's ``last.ckpt`` goes: the checkpoint callback's folder."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath:
        return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
    from halluc_cl.experiments.run_files import run_dir

    return run_dir(trainer) / "checkpoints" / "last.ckpt"


class InterruptCheckpoint(L.Callback):
    """Stops a fit at the next safe point after a deferred SIGINT or SIGTERM, with a checkpoint.

    Safe points are the end of a training step that is not the last of its epoch and ends a
    gradient-accumulation window (the optimizer stepped: no partial gradient is lost), and the
    end of an epoch (after its evaluation, the warm-up snapshot and the epoch's own
    checkpoint), unless it is the last epoch: then the fit finishes. The fit stops through
    Lightning's SIGTERM path, and ``on_exception`` saves ``last.ckpt`` with the loops'
    progress, so that ``--ckpt_path`` resumes with the next step as if nothing had happened.

    Under several processes every safe point asks all of them whether any received a signal
    (``any_rank``), so a signal to one process stops every process at the same step, with one
    checkpoint. This replaces Lightning's own handler, which broadcasts rank 0's flag only.
    """

    def __init__(self) -> None:
        self.saved: Path | None = None
        self._stopping = self._deferring = False

    def on_train_start(self, trainer, pl_module) -> None:
        if GUARD.active and not self._deferring:
            GUARD.install()  # over the SIGTERM handler Lightning set up for the fit
            GUARD.defer()
            self._deferring = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        window_done = (batch_idx + 1) % max(1, trainer.accumulate_grad_batches) == 0
        if window_done and batch_idx + 1 < trainer.num_training_batches \
                and any_rank(GUARD.pending is not None):
            self._stop(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        max_epochs = trainer.max_epochs
        last = max_epochs is not None and 0 <= max_epochs <= trainer.current_epoch + 1
        if not last and any_rank(GUARD.pending is not None):
            self._stop(trainer)

    def _stop(self, trainer) -> None:
        if GUARD.pending is None:  # another process received the signal
            GUARD.pending = int(signal.SIGTERM)
        self._stopping = True
        connector = getattr(trainer, "_signal_connector", None)
        if connector is None or not hasattr(connector, "received_sigterm"):
            raise Interrupted(GUARD.pending)
        connector.received_sigterm = True  # Lightning stops after this step or epoch

    def _release(self) -> None:
        if self._deferring:
            GUARD.release()
            self._deferring = False

    def on_train_end(self, trainer, pl_module) -> None:
        self._release()

    def teardown(self, trainer, pl_module, stage) -> None:
        self._release()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._release()
        if self._stopping and isinstance(exception, (SIGTERMException, Interrupted)) \
                and not getattr(exception, "forced", False):
            path = last_checkpoint_path(trainer)
            if isinstance(trainer.checkpoint_callback, ModelCheckpoint):
                # its own file from now on (saved in the checkpoint): written over later, not
                # kept beside a new last-v1.ckpt
                trainer.checkpoint_callback.last_model_path = str(path)
            trainer.save_checkpoint(path, weights_only=False)  # optimizer state included
            self.saved = path


def trainer_interruption(exc: BaseException, trainer: L.Trainer, fitting: bool) -> Interrupted:
    """The ``Interrupted`` a stopped trainer command reports: where it stopped, the checkpoint
    kept, and (fit) the options that resume from it in the same run folder."""
    signum = exc.signum if isinstance(exc, Interrupted) else (GUARD.pending or signal.SIGTERM)
    out = Interrupted(signum, forced=getattr(exc, "forced", False))
    if not fitting:
        return out
    stopper = next((c for c in trainer.callbacks if isinstance(c, InterruptCheckpoint)), None)
    saved = stopper.saved if stopper is not None else None
    last = getattr(trainer.checkpoint_callback, "last_model_path", "")
    kept = saved or (Path(last) if last and Path(last).is_file() else None)
    out.details.append(f"stopped at epoch {trainer.current_epoch}, step {trainer.global_step}")
    if kept is None:
        out.details.append("no checkpoint was saved")
        return out
    out.details.append(f"checkpoint saved: {kept}" if saved else
                       f"the last checkpoint is kept: {kept}")
    out.resume = {"--ckpt_path": str(kept)}
    from halluc_cl.experiments.run_files import artifacts_of

    artifacts = artifacts_of(trainer)
    if artifacts is not None and artifacts.run is not None:  # resume in the same run folder
        out.resume["--artifacts.version"] = artifacts.run.name
    return out
