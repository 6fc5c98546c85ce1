"""The private Lightning names halluc-cl still relies on, each for a reason given where it is
used: these tests fail on a Lightning upgrade that removes or changes them, instead of a fit
that silently stops handling checkpoints or signals as documented."""

from __future__ import annotations

import inspect

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loops import training_epoch_loop
from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector

from halluc_cl.experiments.fit import HallucCLI


def test_lightning_cli_runs_the_verb_through_run_subcommand():
    assert "self._run_subcommand(self.subcommand)" in inspect.getsource(LightningCLI.__init__)
    assert list(inspect.signature(LightningCLI._run_subcommand).parameters) == \
        ["self", "subcommand"]
    assert HallucCLI._run_subcommand is not LightningCLI._run_subcommand


def test_lightning_cli_reads_the_checkpoints_hyperparameters_in_parse_ckpt_path():
    source = inspect.getsource(LightningCLI)
    assert "self._parse_ckpt_path()" in source
    assert "ckpt_path" in inspect.getsource(LightningCLI._parse_ckpt_path)
    assert list(inspect.signature(LightningCLI._parse_ckpt_path).parameters) == ["self"]


def test_the_sigterm_flag_stops_the_training_loop():
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    assert isinstance(trainer._signal_connector, _SignalConnector)
    assert trainer._signal_connector.received_sigterm is False
    assert "received_sigterm" in inspect.getsource(training_epoch_loop)
