"""What the two-process tests share: the fit's command line, running the CLI in a child
process (one thread each), and comparing two runs' summaries."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from halluc_cl.cli import main
from halluc_cl.experiments.compare import LAUNCHED

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
    env = {**{k: v for k, v in os.environ.items() if k not in LAUNCHED},
           "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
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


def one_process_fit(tmp_path_factory, halluc_cache, tiny_model_dir) -> Path:
    """The distillation fit on one process (the module fixture ``one`` of each file)."""
    out = tmp_path_factory.mktemp("one")
    with one_thread():
        main(fit_args(out))
    return out / "distill" / "version_0"
