"""Exact resume: a fit stopped by SIGTERM or Ctrl-C, mid-epoch or at an epoch end, during the
warm-up or after the snapshot, and resumed with ``--ckpt_path`` (the printed resume command,
or ``last``) ends exactly like an uninterrupted fit with the same seed: same summary, metrics,
predictions and final weights. Regularizer state, the snapshot teacher, the hallucination
reference, the history, the data order and the RNG states all come back."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch
from resume_util import COMMON, ROOT, TINY, assert_same_run, run_cli, signal_at

MESSAGE = re.compile(r"error: interrupted \((SIG\w+)\); stopped at epoch (\d+), step (\d+); "
                     r"checkpoint saved: (\S+); resume with: halluc-cl (.+)")
EXIT = {"SIGINT": 130, "SIGTERM": 143}

# method: overlay config, extra fit arguments, [(step that gets the signal, signal)], and
# whether to resume with the printed command or with "--ckpt_path last" in the same folder.
# Steps 0-1 are the warm-up epoch, 2-5 and 6-9 the SFT epochs.
CASES = {
    # mid warm-up (before the snapshot: taken at the warm-up end after the resume), then
    # mid-SFT with the teacher restored
    # (the live teacher: the default's cached one is the distill_nearest case's kind)
    "distill": ("distill.yaml", ["--data.extra_per_batch", "8",
                                 "--model.methods.init_args.cache_top_k", "0"],
                [(0, "SIGTERM"), (4, "SIGTERM")], "printed"),
    # mid-SFT: the nearest-input ranking (data module state) and the pool's teacher cache
    "distill_nearest": ("distill_nearest.yaml", [], [(4, "SIGTERM")], "printed"),
    "ewc": ("ewc.yaml", [], [(6, "SIGINT")], "last"),  # anchor + Fisher restored
    "l2": ("l2.yaml", [], [(3, "SIGTERM")], "printed"),  # the matched λ scale restored
}


def tensors_in(value) -> int:
    """Tensors anywhere in a checkpoint entry."""
    if isinstance(value, torch.Tensor):
        return 1
    if isinstance(value, dict):
        return sum(tensors_in(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensors_in(v) for v in value)
    return 0


@pytest.mark.parametrize("method", CASES)
def test_interrupted_fit_resumes_exactly(method, tmp_path, tiny_model_dir, one_thread, capsys):
    overlay, extra, kills, resume = CASES[method]
    base = ["fit", "--config", str(ROOT / "configs/sft.yaml"),
            "--config", str(ROOT / "configs/method" / overlay), *TINY, *COMMON,
            "--trainer.enable_progress_bar", "false", "--artifacts.save_model", "false", *extra]
    code, _ = run_cli([*base, "--trainer.logger.init_args.save_dir", str(tmp_path / "ref")],
                      capsys)
    assert code == 0

    args = [*base, "--trainer.logger.init_args.save_dir", str(tmp_path / "int")]
    for step, sig in kills:
        code, errors = run_cli([*args, *signal_at(step, sig)], capsys)
        assert code == EXIT[sig] and len(errors) == 1, errors
        found = MESSAGE.fullmatch(errors[0])
        assert found and found[1] == sig and int(found[3]) == step + 1, errors[0]
        ckpt = torch.load(found[4], weights_only=True)
        assert ckpt["global_step"] == step + 1
        state = ckpt["halluc_cl"]
        if step < 2:  # interrupted in the warm-up: no snapshot yet
            assert not state["snapshot_taken"] and state["teacher"] is None
        else:
            assert state["snapshot_taken"] and state["reference"]
            if method == "distill":  # the teacher's weights are beside it, not in it
                assert set(state["teacher"]) == {"file", "sha256"}
                assert Path(state["teacher"]["file"]).is_file()
                assert not tensors_in(state["teacher"])
            elif method == "distill_nearest":  # the cached teacher: no live one
                assert state["teacher"] is None
            if method == "distill_nearest":
                assert state["methods"][0]["pool_cache"]["keys"]
                assert ckpt["FactDataModule"]["neighbours"].shape[1] == 8
        run = ROOT.joinpath(found[4]).parents[1]
        assert run == tmp_path / "int" / method / "version_0"  # the overlay names the run
        assert not (run / "summary.json").exists()
        if resume == "printed":
            args = shlex.split(found[5])
        else:
            args = [*base, "--trainer.logger.init_args.save_dir", str(tmp_path / "int"),
                    "--trainer.logger.init_args.version", "0", "--ckpt_path", "last"]
    code, errors = run_cli(args, capsys)
    assert code == 0 and errors == []
    assert_same_run(run, tmp_path / "ref" / method / "version_0")
