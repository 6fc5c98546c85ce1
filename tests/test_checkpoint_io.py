"""Checkpoint writes survive SIGKILL: a writer killed at random moments while it saves
checkpoints in a loop never leaves a torn or missing ``last.ckpt``, only the previous
checkpoint or the new one; the next save clears the killed writer's temporary file."""

from __future__ import annotations

import os
import random
import signal
import time

import torch

from halluc_cl.checkpoint_io import SafeCheckpointIO

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
