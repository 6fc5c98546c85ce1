"""What a fit prints first: parameter counts and the run folder, no FLOPs, no advertisement."""

import logging
import os
import subprocess
import sys

from lightning.pytorch.callbacks import ModelSummary, RichModelSummary

from halluc_cl.train.summary import (
    LightningTip,
    ParameterSummary,
    summary_table,
    use_parameter_summary,
)


def test_table_keeps_counts_and_drops_flops_and_empty_rows():
    data = [(" ", ["0", "1"]), ("Name", ["accuracy", "student"]),
            ("Type", ["ModuleDict", "GPT2LMHeadModel"]), ("Params", ["0", "1.5 M"]),
            ("Mode", ["train", "train"]), ("FLOPs", ["0", "0"])]
    lines = summary_table(data, 1_500_000, 1_000_000, 6.0).splitlines()
    assert lines[0].split(" | ") == ["Name   ", "Type           ", "Params", "Mode"]
    assert lines[1].split(" | ") == ["student", "GPT2LMHeadModel", "1.5 M ", "train"]
    assert lines[2:] == ["Trainable params: 1.0 M", "Non-trainable params: 500 K",
                         "Total params: 1.5 M", "Total estimated model params size (MB): 6.00"]


def test_only_lightnings_default_summaries_are_replaced():
    class Mine(ModelSummary):
        pass

    mine = Mine(max_depth=3)
    callbacks = [ModelSummary(), mine, RichModelSummary()]
    use_parameter_summary(callbacks)
    assert [type(c) for c in callbacks] == [ParameterSummary, Mine, ParameterSummary]
    assert callbacks[1] is mine


def test_the_tip_filter_drops_only_tips():
    def record(msg):
        return logging.LogRecord("lightning", logging.INFO, __file__, 1, msg, None, None)

    tip = LightningTip()
    assert not tip.filter(record("💡 Tip: For seamless cloud logging, try installing x"))
    assert tip.filter(record("GPU available: False, used: False"))


def test_first_screen_of_a_fit(tmp_path, tiny_model_dir, halluc_cache):
    """The command as a user runs it: stdout and stderr together, as a terminal shows them."""
    env = {**os.environ, "HALLUC_CL_CACHE": str(halluc_cache), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", "from halluc_cl.cli import main; main()", "fit", "--config", "sft",
         "--config", "world/tiny", "--trainer.max_epochs", "2",
         "--trainer.enable_progress_bar", "false", "--artifacts.save_model", "false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    screen = done.stdout + done.stderr
    assert done.returncode == 0, screen[-3000:]
    assert "FLOPs" not in screen and "Tip:" not in screen and "litlogger" not in screen
    assert "Trainable params: 123 K" in screen and "\nstudent | GPT2LMHeadModel" in screen
    assert "run folder: runs/sft/version_0" in screen
