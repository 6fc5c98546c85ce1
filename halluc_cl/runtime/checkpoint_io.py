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
from contextlib import contextmanager

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from halluc_cl.errors import ModelLoadError
from halluc_cl.facts.prompts import PromptFormat
from halluc_cl.io import atomic_write


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


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """``torch.save`` atomically and durably (``halluc_cl.io.atomic_write``).

    Raises:
        WriteError: the write failed (a full disk, say); ``path`` is as it was and the
            temporary file is removed.
    """
    atomic_write(path, lambda fh: torch.save(obj, fh))


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
