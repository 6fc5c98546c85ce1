"""Checkpoint files: read with ``weights_only=True`` only, written so that a kill never
destroys the last good one.

A checkpoint is written to a hidden temporary file in its own folder, flushed to disk
(``fsync``) and renamed over the old file (``os.replace``, atomic on POSIX), and the folder
entry is synced too. A process killed at any moment, even by SIGKILL, leaves the previous
checkpoint or the new one, never a torn file. The temporary file of a killed writer is
removed by the next save into the same folder. A write that fails (a full disk) is a
``WriteError`` naming the checkpoint; the previous one is kept.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from halluc_cl.data.prompts import PromptFormat
from halluc_cl.data.schema import current_umask, writing
from halluc_cl.errors import ModelLoadError


@contextmanager
def reading_checkpoint(path):
    """Checkpoint loading under ``weights_only=True``: a pickled object that would run code,
    and an unreadable file, become user errors naming the file."""
    try:
        with torch.serialization.safe_globals([PromptFormat]):  # a data.prompt hyperparameter
            yield
    except FileNotFoundError:
        raise ModelLoadError(f"checkpoint not found: {path}") from None
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found is None:
            raise ModelLoadError(f"cannot read checkpoint {path}: not a PyTorch checkpoint, "
                                 "or a corrupt one") from None
        raise ModelLoadError(f"refusing to load checkpoint {path}: it holds a pickled "
                             f"{found.group(1)}, not only tensors and plain data (checkpoints "
                             "load with weights_only=True)") from None
    except (RuntimeError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "the file ends early"
        raise ModelLoadError(f"cannot read checkpoint {path}: {first}") from None


def _temp_prefix(path: Path, pid: int | str) -> str:
    return f".{path.name}.{pid}."


def _remove_stale_temps(path: Path) -> None:
    """Temporary files of earlier writers of ``path`` that no longer run (killed mid-save)."""
    for temp in path.parent.glob(f".{path.name}.*.tmp"):
        pid = temp.name[len(path.name) + 2:].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            temp.unlink(missing_ok=True)
        except OSError:  # alive, but another user's
            pass


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename it into place.

    Raises:
        WriteError: the write failed (a full disk, say); ``path`` is as it was and the
            temporary file is removed.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path, os.getpid()),
                                   suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(obj, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; follow the umask
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    with suppress(OSError):  # the rename itself survives a crash once the folder is synced
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


class SafeCheckpointIO(TorchCheckpointIO):
    """Loads checkpoints with ``torch.load(weights_only=True)``, whatever the caller asks, and
    saves local ones atomically (``atomic_torch_save``)."""

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        with reading_checkpoint(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None or "://" in str(path):  # remote: Lightning's own writer
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        atomic_torch_save(checkpoint, path)
