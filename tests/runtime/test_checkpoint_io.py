"""Checkpoint writes survive SIGKILL: a writer killed at random moments while it saves
checkpoints in a loop never leaves a torn or missing ``last.ckpt``, only the previous
checkpoint or the new one; the next save clears the killed writer's temporary file. A write
that fails (a full disk) is a ``WriteError`` naming the file, and keeps the previous one."""

from __future__ import annotations

import os
import random
import re
import signal
import time

import pytest
import torch

from halluc_cl.errors import WriteError
from halluc_cl.runtime.checkpoint_io import SafeCheckpointIO

N = 1_000_000  # 4 MB per checkpoint: a save takes long enough to be hit


def _checkpoint(step: int) -> dict:
    return {"global_step": step, "state_dict": {"w": torch.full((N,), float(step))}}


def _save_forever(io: SafeCheckpointIO, path) -> None:
    """The child: save checkpoints of rising steps until killed."""
    try:
        step = 0
        while True:
            step += 1
            io.save_checkpoint(_checkpoint(step), path)
    finally:
        os._exit(0)


def test_checkpoint_saves_survive_sigkill(tmp_path):
    io, path = SafeCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint(_checkpoint(0), path)
    rng, last_step, torn_writes = random.Random(0), 0, 0
    for _ in range(12):
        pid = os.fork()
        if pid == 0:
            _save_forever(io, path)
        time.sleep(rng.uniform(0.01, 0.2))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        ckpt = io.load_checkpoint(path)  # never torn: loads, and is one whole checkpoint
        step = ckpt["global_step"]
        assert torch.equal(ckpt["state_dict"]["w"], torch.full((N,), float(step)))
        assert step >= 1 or last_step == 0
        last_step = step
        torn_writes += any(tmp_path.glob(f".last.ckpt.{pid}.*.tmp"))  # killed mid-write
    assert torn_writes > 0, "no kill landed during a write; the test exercised nothing"
    io.save_checkpoint(_checkpoint(-1), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, full_disk):
    io, path = SafeCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint(_checkpoint(1), path)
    before = path.read_bytes()
    disk = full_disk("last.ckpt")
    with pytest.raises(WriteError, match=rf"^cannot write {re.escape(str(path))}: No space left "
                                         r"on device \(nothing earlier was written over\)$"):
        io.save_checkpoint(_checkpoint(2), path)
    assert len(disk.failed) == 1 and not os.path.exists(disk.failed[0])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.mark.parametrize(("error", "message"), [
    (RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed "
                  "writing file data/0: file write failed"),
     ("PytorchStreamWriter failed writing file data/0: file write failed (is the disk full? "
      "nothing earlier was written over)")),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),
     "unexpected pos 704 vs 598 (is the disk full? nothing earlier was written over)"),
])
def test_torch_write_failure_is_a_write_error(tmp_path, monkeypatch, error, message):
    """torch.save reports some failed writes as a RuntimeError of its stream writer."""
    io, path = SafeCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    def failing_save(obj, fh):
        fh.write(b"PK\x03\x04 half a checkpoint")
        raise error

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(WriteError) as caught:
        io.save_checkpoint({"step": 2}, path)
    assert str(caught.value) == f"cannot write {path}: {message}"
    assert torch.load(path, weights_only=True) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_other_save_errors_are_not_write_errors(tmp_path, monkeypatch):
    """A bug (here an object torch cannot pickle) stays a bug: it is not reported as a
    failed write."""
    def failing_save(obj, fh):
        raise RuntimeError("cannot pickle 'generator' object")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(RuntimeError, match="cannot pickle"):
        SafeCheckpointIO().save_checkpoint({"step": 1}, tmp_path / "last.ckpt")
    assert list(tmp_path.iterdir()) == []
