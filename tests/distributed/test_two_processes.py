"""Two processes (DDP over gloo, on CPU) give the numbers of one.

The real CLI: a one-process fit (in this process); the same fit on two processes started by
Lightning, as a ``compare`` cell, and under ``torchrun`` (the environment a multi-node launch
sets up, on one node); a two-process fit stopped by SIGTERM to one of its processes and
resumed by the printed command; one killed (SIGKILL) and resumed from its last checkpoint;
``probe`` under ``torchrun``. The held-out splits have odd
sizes and the evaluation batch is small, so the two processes run several evaluation batches
per split and one is repeated to even them out.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from halluc_cl.cli import main
from halluc_cl.experiments.compare import compare
from halluc_cl.probing.slick import probe

ROOT = Path(__file__).resolve().parents[2]
HELPERS = ROOT / "tests" / "experiments"  # interrupt_helpers.SignalAt
CONFIGS = [str(ROOT / "configs/distill.yaml"), str(ROOT / "configs/world/tiny.yaml")]
# 15 + 13 held-out facts in batches of 4: 4 and 4 batches per split, 2 per process
SETTINGS = ["--data.n_heldout", "15", "--data.n_heldout_val", "13", "--data.eval_batch_size", "4",
            "--model.drift_layer", "-1", "--trainer.max_epochs", "3",
            "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.accelerator", "cpu",
            # the live teacher (the default's cached one has its own two-process case below)
            "--model.methods.init_args.cache_top_k", "0"]
TWO = ["--trainer.devices", "2", "--trainer.strategy", "ddp"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def run_cli(args: list[str], cwd: Path, launcher: list[str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess:
    """``halluc-cl <args>`` as a subprocess (one thread per process), optionally through a
    launcher such as ``torchrun``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
        [str(HELPERS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([*(launcher or [sys.executable]), "-m", "halluc_cl.cli", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
                          check=False)
    if check:
        assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def fit_args(out: Path, *extra: str) -> list[str]:
    return ["fit", *(a for c in CONFIGS for a in ("--config", c)), *SETTINGS,
            "--trainer.logger.init_args.save_dir", str(out), *extra]


@contextmanager
def one_thread():
    """One thread here and in every process started meanwhile."""
    threads, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if env is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = env


def comparable(run: Path) -> dict:
    """The summary without what may differ: the time, the process count and the config."""
    out = json.loads((run / "summary.json").read_text())
    out.pop("wall_time_s")
    for key in ("config_hash", "processes"):
        out["protocol"].pop(key)
    return out


def assert_same(a, b, key: str = "") -> None:
    """Equal, except the drift (a mean of cosines of hidden states: the weights of the two
    fits differ by the rounding of the gradient all-reduce) to 1e-6."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), key
        for k in a:
            assert_same(a[k], b[k], k)
    elif isinstance(a, list):
        assert len(a) == len(b), key
        for x, y in zip(a, b):
            assert_same(x, y, key)
    elif key == "heldout_drift":
        assert b == pytest.approx(a, abs=1e-6), key
    else:
        assert a == b, key


def metric_rows(run: Path) -> list[dict]:
    with (run / "metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def one(tmp_path_factory, halluc_cache, tiny_model_dir) -> Path:
    """The distillation fit on one process."""
    out = tmp_path_factory.mktemp("one")
    with one_thread():
        main(fit_args(out))
    return out / "distill" / "version_0"


@pytest.fixture(scope="module")
def two(tmp_path_factory, halluc_cache, tiny_model_dir) -> dict[str, Path]:
    """The same fit on two processes: a ``compare`` cell (Lightning starts the processes) and
    under ``torchrun``."""
    grid = tmp_path_factory.mktemp("compare")
    with one_thread():
        compare({"distill": CONFIGS}, seeds=[0], out=str(grid), plots=False,
                fit_args=[*SETTINGS, *TWO])
    torchrun = tmp_path_factory.mktemp("torchrun")
    run_cli(fit_args(torchrun, *TWO), torchrun, launcher=TORCHRUN)
    return {"compare": next(p for p in (grid / "runs" / "distill").iterdir() if p.is_dir()),
            "torchrun": torchrun / "distill" / "version_0"}


@pytest.mark.parametrize("launch", ["compare", "torchrun"])
def test_two_processes_give_the_summary_and_predictions_of_one(one, two, launch):
    two = two[launch]
    assert json.loads((two / "summary.json").read_text())["protocol"]["processes"] == 2
    assert_same(comparable(one), comparable(two))  # every metric, peak, decline and cost
    names = sorted(p.name for p in (one / "predictions").iterdir())
    assert names == sorted(p.name for p in (two / "predictions").iterdir())
    for name in names:
        rows = (two / "predictions" / name).read_text().splitlines()
        assert rows == (one / "predictions" / name).read_text().splitlines()
        ids = [json.loads(r)["id"] for r in rows]
        assert len(ids) == len(set(ids)) == 15 + 13 + 16 + 16  # no fact twice, none lost


def test_nearest_inputs_from_the_cached_teacher_two_processes_give_the_numbers_of_one(
        tmp_path, halluc_cache, tiny_model_dir):
    """``configs/method/distill_nearest.yaml``: each process ranks the pool at the snapshot
    and reads the pool's teacher cache; both draw the one-process batch's nearest inputs."""
    def args(out: Path, *extra: str) -> list[str]:
        configs = [*CONFIGS, str(ROOT / "configs/method/distill_nearest.yaml")]
        return ["fit", *(a for c in configs for a in ("--config", c)), *SETTINGS,
                "--trainer.logger.init_args.save_dir", str(out), *extra]

    with one_thread():
        main(args(tmp_path / "one"))
    run_cli(args(tmp_path / "two", *TWO), tmp_path)
    one, two = (tmp_path / d / "distill_nearest" / "version_0" for d in ("one", "two"))
    assert json.loads((two / "summary.json").read_text())["protocol"]["processes"] == 2
    assert_same(comparable(one), comparable(two))


def test_two_processes_log_the_losses_of_one(one, two):
    rows_one, rows_two = metric_rows(one), metric_rows(two["torchrun"])
    assert len(rows_one) == len(rows_two)
    for a, b in zip(rows_one, rows_two):
        assert a.keys() == b.keys()
        for key in a:
            if key.startswith(("train/", "reg/")) and a[key]:  # summed in another order
                assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-5, abs=1e-6), key
            elif key == "heldout_drift" and a[key]:
                assert float(b[key]) == pytest.approx(float(a[key]), abs=1e-6), key
            else:
                assert a[key] == b[key], key


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


def test_probe_under_torchrun_writes_the_categories_of_one_process(tmp_path, halluc_cache,
                                                                   tiny_model_dir):
    args = {"model": "synthetic://tiny", "source": "synthetic://tiny", "n_prompts": 2,
            "n_samples": 2, "facts_per_batch": 4, "limit": 60}
    with one_thread():
        probe(**args, out=str(tmp_path / "one.jsonl"))
    run_cli(["probe", *(x for k, v in args.items() for x in (f"--{k}", str(v))),
             "--out", "two.jsonl"], tmp_path, launcher=TORCHRUN)
    assert (tmp_path / "two.jsonl").read_text() == (tmp_path / "one.jsonl").read_text()
    assert json.loads((tmp_path / "two.jsonl.stats.json").read_text())["processes"] == 2
    assert not list(tmp_path.glob("*.partial*"))
