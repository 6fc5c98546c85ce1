"""Two processes (DDP over gloo, on CPU) stopped and resumed give the numbers of one: a fit
stopped by SIGTERM to one of its processes and resumed by the printed command, and one killed
(SIGKILL) and resumed from its last checkpoint. (A file of its own, so that a parallel run
of the suite puts it beside the other two-process cases.)"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
from two_process import TWO, assert_same, comparable, fit_args, one_process_fit, run_cli


@pytest.fixture(scope="module")
def one(tmp_path_factory, halluc_cache, tiny_model_dir) -> Path:
    """The distillation fit on one process."""
    return one_process_fit(tmp_path_factory, halluc_cache, tiny_model_dir)


def test_sigterm_to_one_process_stops_both_with_one_checkpoint_and_resumes(one, tmp_path,
                                                                          halluc_cache):
    """SIGTERM reaches only rank 1 at step 3 (the first of epoch 2's two): both processes
    stop after it with one checkpoint and one error line; the printed command resumes to the
    one-process result."""
    signal_at = {"class_path": "interrupt_helpers.SignalAt", "init_args": {"step": 3, "rank": 1}}
    proc = run_cli(fit_args(tmp_path, *TWO, "--trainer.callbacks", json.dumps([signal_at])),
                   tmp_path, check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 143 and "Traceback" not in proc.stderr, proc.stderr[-4000:]
    run = tmp_path / "distill" / "version_0"
    assert len(errors) == 1, errors
    assert errors[0].startswith("error: interrupted (SIGTERM); stopped at epoch 2, step 4; "
                                f"checkpoint saved: {run / 'checkpoints/last.ckpt'}")
    # one checkpoint of the stop (beside epoch 1's own), not one per process, and the live
    # teacher's weights written once beside them
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch=1-step=3.ckpt", "last.ckpt", "snapshot_teacher.pt"]
    assert not (run / "summary.json").exists()
    resume = shlex.split(errors[0].split("resume with: ", 1)[1])
    assert resume[0] == "halluc-cl" and resume[-4:] == [
        "--ckpt_path", str(run / "checkpoints/last.ckpt"),
        "--artifacts.version", "version_0"]
    run_cli(resume[1:], tmp_path)
    assert_same(comparable(one), comparable(run))


def test_a_process_killed_mid_epoch_resumes_exactly_from_the_last_checkpoint(one, tmp_path,
                                                                            halluc_cache):
    """SIGKILL to rank 1 at step 3 (no chance to save): the fit fails, its last checkpoint is
    the end of epoch 1, and resuming from it on two processes gives the one-process result."""
    kill_at = {"class_path": "interrupt_helpers.SignalAt",
               "init_args": {"step": 3, "rank": 1, "signal": "SIGKILL"}}
    killed = fit_args(tmp_path, *TWO, "--trainer.callbacks", json.dumps([kill_at]))
    assert run_cli(killed, tmp_path, check=False).returncode != 0
    run = tmp_path / "distill" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3
    assert not (run / "summary.json").exists()
    run_cli(fit_args(tmp_path, *TWO, "--ckpt_path", str(last), "--artifacts.version",
                     "version_0"), tmp_path)
    assert_same(comparable(one), comparable(run))
