"""Two processes (DDP over gloo, on CPU) give the numbers of one.

The real CLI: a one-process fit (in this process); the same fit on two processes started by
Lightning, as a ``compare`` cell, and under ``torchrun`` (the environment a multi-node launch
sets up, on one node); ``probe`` under ``torchrun`` (stopped and resumed fits:
``test_stop_and_resume.py``). The held-out splits have odd
sizes and the evaluation batch is small, so the two processes run several evaluation batches
per split and one is repeated to even them out.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from two_process import (
    CONFIGS,
    ROOT,
    SETTINGS,
    TORCHRUN,
    TWO,
    assert_same,
    comparable,
    fit_args,
    metric_rows,
    one_process_fit,
    one_thread,
    run_cli,
)

from halluc_cl.cli import main
from halluc_cl.experiments.compare import compare
from halluc_cl.probing.slick import probe


@pytest.fixture(scope="module")
def one(tmp_path_factory, halluc_cache, tiny_model_dir) -> Path:
    """The distillation fit on one process."""
    return one_process_fit(tmp_path_factory, halluc_cache, tiny_model_dir)


@pytest.fixture(scope="module")
def two(tmp_path_factory, halluc_cache, tiny_model_dir) -> dict[str, Path]:
    """The same fit on two processes: a ``compare`` cell (Lightning starts the processes; in
    a process where an earlier launcher left its variables, which the cell's fit must not
    take for its own) and under ``torchrun``."""
    grid = tmp_path_factory.mktemp("compare")
    leftover = {"LOCAL_RANK": "0", "NODE_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": "1"}  # what Lightning's launcher writes into its process
    before = dict(os.environ)
    os.environ.update(leftover)
    try:
        with one_thread():
            compare({"distill": CONFIGS}, seeds=[0], out=str(grid), plots=False,
                    fit_args=[*SETTINGS, *TWO])
    finally:
        os.environ.clear()
        os.environ.update(before)
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
