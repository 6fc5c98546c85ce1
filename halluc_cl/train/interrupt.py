"""Stopping a fit at a safe point after SIGTERM or Ctrl-C, with a checkpoint to resume from
(the signal handling itself: ``halluc_cl.runtime.signals``; docs/reliability.md)."""

from __future__ import annotations

import signal
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

from halluc_cl.distributed import any_rank
from halluc_cl.runtime.signals import GUARD, Interrupted
from halluc_cl.train.run_files import artifacts_of, run_dir


def last_checkpoint_path(trainer: L.Trainer) -> Path:
    """Where the fit's ``last.ckpt`` goes: the checkpoint callback's folder."""
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath:
        return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
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
        # private: Lightning's own SIGTERM flag is the only way to stop through its SIGTERM path
        # (on_exception, loops' progress saved as completed); tests/test_lightning_private.py
        try:
            connector = trainer._signal_connector
            connector.received_sigterm  # noqa: B018 (present in every Lightning 2.x)
        except AttributeError:
            raise Interrupted(GUARD.pending) from None
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
                and not (isinstance(exception, Interrupted) and exception.forced):
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
    out = Interrupted(signum, forced=isinstance(exc, Interrupted) and exc.forced)
    if not fitting:
        return out
    stopper = next((c for c in trainer.callbacks if isinstance(c, InterruptCheckpoint)), None)
    saved = stopper.saved if stopper is not None else None
    callback = trainer.checkpoint_callback
    last = callback.last_model_path if isinstance(callback, ModelCheckpoint) else ""
    kept = saved or (Path(last) if last and Path(last).is_file() else None)
    out.details.append(f"stopped at epoch {trainer.current_epoch}, step {trainer.global_step}")
    if kept is None:
        out.details.append("no checkpoint was saved")
        return out
    out.details.append(f"checkpoint saved: {kept}" if saved else
                       f"the last checkpoint is kept: {kept}")
    out.resume = {"--ckpt_path": str(kept)}
    artifacts = artifacts_of(trainer)
    if artifacts is not None and artifacts.run is not None:  # resume in the same run folder
        out.resume["--artifacts.version"] = artifacts.run.name
    return out
