"""SIGTERM and Ctrl-C (SIGINT) during fit, probe and compare: the fit saves a checkpoint, the
probe keeps its finished facts, compare its finished cells; one ``error: interrupted ...``
line with the resume command, exit code 128 + signal number; and the next run resumes to the
result of an uninterrupted one."""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from resume_util import COMMON, HELPERS, ROOT, assert_same_run, run_cli, signal_at

from halluc_cl import cli
from halluc_cl.experiments import compare as compare_module
from halluc_cl.experiments.grid import Cell
from halluc_cl.runtime.signals import GUARD, Interrupted, handling_signals, resume_command

SFT = str(ROOT / "configs/sft.yaml")
TINY_CFG = str(ROOT / "configs/world/tiny.yaml")
# the fit of compare's cell sft/unk0.5_split0_seed0 (COMMON as fit_args), for the reference
CELL = Cell("sft", (SFT, TINY_CFG), 0.5, 0)
RESUME = re.compile(r"(?P<head>.*); resume with: halluc-cl (?P<command>.+)")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir):
    """An uninterrupted fit of the cell, the result every resumed run must reproduce."""
    out = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cli.main(["fit", *CELL.args(), *COMMON, "--trainer.logger.init_args.save_dir", str(out)])
    finally:
        torch.set_num_threads(threads)
    return out / "sft" / "version_0"


def _split(error_line: str) -> tuple[str, list[str]]:
    """(the message before the resume command, the command's arguments)."""
    found = RESUME.fullmatch(error_line)
    assert found, error_line
    return found["head"], shlex.split(found["command"])


def _env(cache: str) -> dict:
    path = [str(HELPERS), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(path), "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HALLUC_CL_CACHE": cache}


def _signal_when_ready(proc: subprocess.Popen, ready: Path, signum: int) -> tuple[str, str]:
    deadline = time.monotonic() + 300
    while not ready.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the subprocess never reached the signal point"
        time.sleep(0.05)
    proc.send_signal(signum)
    return proc.communicate(timeout=300)


def test_fit_sigterm_saves_checkpoint_and_resumes_exactly(reference, tmp_path, halluc_cache,
                                                          one_thread, capsys):
    """A real ``python -m halluc_cl.cli fit`` gets SIGTERM from outside during step 5, the
    last of epoch 1: it finishes the epoch, checkpoints it and exits 143."""
    ready = tmp_path / "ready"
    args = ["fit", *CELL.args(), *COMMON, "--trainer.logger.init_args.save_dir", str(tmp_path),
            *signal_at(5, ready_file=str(ready))]
    proc = subprocess.Popen([sys.executable, "-m", "halluc_cl.cli", *args], cwd=tmp_path,
                            env=_env(halluc_cache), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _, err = _signal_when_ready(proc, ready, signal.SIGTERM)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 143 and len(errors) == 1 and "Traceback" not in err, err[-3000:]
    run = tmp_path / "sft" / "version_0"
    head, command = _split(errors[0])
    assert head == ("error: interrupted (SIGTERM); stopped at epoch 2, step 6; checkpoint "
                    f"saved: {run / 'checkpoints/last.ckpt'}")
    assert command == [*args, "--ckpt_path", str(run / "checkpoints/last.ckpt"),
                       "--artifacts.version", "version_0"]
    assert not (run / "summary.json").exists()
    assert sorted(p.name for p in (run / "predictions").iterdir()) == ["epoch_0.jsonl",
                                                                       "epoch_1.jsonl"]
    code, _ = run_cli(command, capsys)  # the printed resume command, in-process
    assert code == 0
    assert_same_run(run, reference)


def test_second_signal_stops_at_once_and_the_last_checkpoint_resumes(reference, tmp_path,
                                                                     one_thread, capsys):
    args = ["fit", *CELL.args(), *COMMON, "--trainer.logger.init_args.save_dir", str(tmp_path)]
    code, errors = run_cli([*args, *signal_at(3, times=2)], capsys)
    run = tmp_path / "sft" / "version_0"
    assert code == 143 and len(errors) == 1
    head, command = _split(errors[0])
    assert head == ("error: interrupted (SIGTERM, twice: stopped at once); stopped at epoch 1, "
                    f"step 3; the last checkpoint is kept: {run / 'checkpoints/last.ckpt'}")
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["global_step"] == 2
    at = command.index("--trainer.callbacks")  # resumed before step 3: without the signals
    code, _ = run_cli(command[:at] + command[at + 2:], capsys)
    assert code == 0
    assert_same_run(run, reference)


PROBE = ["probe", "--model", "synthetic://tiny", "--source", "synthetic://tiny", "--limit", "12",
         "--n_prompts", "2", "--k_shot", "1", "--n_samples", "2", "--max_new_tokens", "6",
         "--facts_per_batch", "4"]
# the probe subprocess: waits in its 3rd batch (after 8 facts) for the signal
SLOW_PROBE = """
import sys, time
from pathlib import Path
from halluc_cl.probing.slick import SliCKProbe
real, calls = SliCKProbe.probe_batch, []
def probe_batch(self, facts):
    calls.append(1)
    if len(calls) == 3:
        Path(sys.argv[1]).touch()
        time.sleep(300)
    return real(self, facts)
SliCKProbe.probe_batch = probe_batch
from halluc_cl.cli import main
main(sys.argv[2:])
"""


def test_probe_ctrl_c_keeps_finished_facts_and_resumes(tmp_path, halluc_cache, tiny_model_dir,
                                                       one_thread, capsys):
    full = tmp_path / "full.jsonl"
    assert run_cli([*PROBE, "--out", str(full)], capsys)[0] == 0
    out, ready = tmp_path / "probe.jsonl", tmp_path / "ready"
    args = [*PROBE, "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_PROBE, str(ready), *args],
                            cwd=tmp_path, env=_env(halluc_cache), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _, err = _signal_when_ready(proc, ready, signal.SIGINT)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode == 130 and len(errors) == 1 and "Traceback" not in err, err[-3000:]
    partial = tmp_path / "probe.jsonl.partial.jsonl"
    head, command = _split(errors[0])
    assert head == f"error: interrupted (SIGINT); 8 of 12 facts probed, kept in {partial}"
    assert command == args and not out.exists()
    assert partial.read_text().splitlines() == full.read_text().splitlines()[:8]
    with partial.open("a") as fh:  # as if a later run was killed while appending
        fh.write('{"id": "w0-e1')
    assert run_cli(command, capsys)[0] == 0
    assert out.read_text() == full.read_text() and not partial.exists()


def test_compare_sigterm_in_a_cell_keeps_finished_cells_and_resumes_the_cell(
        reference, tmp_path, one_thread, capsys):
    grid = tmp_path / "grid"
    fit_args = [*COMMON, *signal_at(4, run_contains="unk0.5_split0_seed0")]
    args = ["compare", "--methods", json.dumps({"sft": [SFT, TINY_CFG]}), "--seeds", "[0]",
            "--unknown_fractions", "[0.25, 0.5]", "--out", str(grid), "--plots", "false",
            "--fit_args", json.dumps(fit_args)]
    code, errors = run_cli(args, capsys)
    (cell,) = grid.glob("runs/sft/unk0.5_split0_seed0_*")
    assert code == 143 and len(errors) == 1
    head, command = _split(errors[0])
    assert head == (f"error: interrupted (SIGTERM); in cell sft/{cell.name}: stopped at epoch 1, "
                    f"step 5, checkpoint saved: {cell / 'checkpoints/last.ckpt'}; 1 of 2 cells "
                    "finished")
    assert command == args
    (first,) = grid.glob("runs/sft/unk0.25_split0_seed0_*/summary.json")
    mtime = first.stat().st_mtime_ns
    assert not (cell / "summary.json").exists() and not (grid / "results.csv").exists()

    code, _ = run_cli(command, capsys)
    assert code == 0
    assert first.stat().st_mtime_ns == mtime  # the finished cell is kept as it was
    assert_same_run(cell, reference)  # the resumed cell ends as an uninterrupted fit
    assert json.loads((cell / "cell.json").read_text())["finished"] is True
    assert len((grid / "results.csv").read_text().splitlines()) == 3


def test_compare_signal_between_cells_stops_before_the_next(tmp_path, monkeypatch, capsys,
                                                          summary_stub):
    calls = []

    def fake_fit(args, signal_at_end=True):
        calls.append(args)
        arg = {k: v for k, v in itertools.pairwise(args) if k.startswith("--artifacts.")}
        run = Path(arg["--artifacts.root"], arg["--artifacts.name"], arg["--artifacts.version"])
        run.mkdir(parents=True, exist_ok=True)
        (run / "summary.json").write_text(json.dumps(summary_stub()))
        if signal_at_end:  # SIGTERM as the fit finishes: recorded, the fit completes
            GUARD.defer()
            signal.raise_signal(signal.SIGTERM)
            GUARD.release()

    monkeypatch.setattr(compare_module, "run_verb", fake_fit)
    args = ["compare", "--methods", json.dumps({"sft": [SFT]}), "--seeds", "[0, 1]",
            "--out", str(tmp_path), "--plots", "false"]
    code, errors = run_cli(args, capsys)
    assert code == 143 and len(calls) == 1
    assert errors == [("error: interrupted (SIGTERM); 1 of 2 cells finished; resume with: "
                       f"halluc-cl {shlex.join(args)}")]
    monkeypatch.setattr(compare_module, "run_verb", lambda a: fake_fit(a, signal_at_end=False))
    assert run_cli(args, capsys)[0] == 0
    assert len(calls) == 2 and (tmp_path / "results.csv").is_file()


def test_signal_guard_defers_once_then_stops_at_once():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with handling_signals() as guard:
        with pytest.raises(Interrupted) as now:  # outside a training loop: at once
            signal.raise_signal(signal.SIGTERM)
        assert now.value.exit_code == 143 and not now.value.forced
        guard.defer()
        signal.raise_signal(signal.SIGINT)  # inside: recorded for the next safe point
        assert guard.pending == signal.SIGINT
        with pytest.raises(Interrupted) as again:
            signal.raise_signal(signal.SIGINT)
        assert again.value.forced and again.value.exit_code == 130
        guard.release()
        with pytest.raises(Interrupted):
            guard.check()
    assert {s: signal.getsignal(s) for s in before} == before and not GUARD.active


def test_resume_command_replaces_both_option_forms():
    args = ["fit", "--ckpt_path=old.ckpt", "--config", "a b.yaml", "--artifacts.version", "3"]
    assert resume_command(args, {"--ckpt_path": "x.ckpt", "--artifacts.version": "version_3"}) \
        == "halluc-cl fit --config 'a b.yaml' --ckpt_path x.ckpt --artifacts.version version_3"


def test_a_stop_waits_for_the_end_of_a_gradient_accumulation_window(tmp_path, tiny_model_dir,
                                                                    one_thread, capsys):
    """With two batches per optimizer step, SIGTERM at the first batch of step 2 (epoch 1's
    third of four batches) stops after the fourth, which completes the step, not after the
    third (its gradient would be lost); the resumed fit equals an uninterrupted one."""
    args = ["fit", *CELL.args(), *COMMON, "--trainer.accumulate_grad_batches", "2"]
    reference = tmp_path / "reference"
    assert run_cli([*args, "--trainer.logger.init_args.save_dir", str(reference)], capsys)[0] == 0
    out = tmp_path / "stopped"
    stopped = [*args, "--trainer.logger.init_args.save_dir", str(out)]
    code, errors = run_cli([*stopped, *signal_at(2)], capsys)
    assert code == 143 and len(errors) == 1
    head, command = _split(errors[0])
    assert "stopped at epoch 2, step 3;" in head  # not "epoch 1, step 2": mid-window
    assert run_cli(command, capsys)[0] == 0
    assert_same_run(out / "sft" / "version_0", reference / "sft" / "version_0")
