"""Running a Trainer verb (``fit``, ``validate``, ``test``) from its command-line arguments:
``HallucCLI``, the LightningCLI of ``FactSFTModule`` + ``FactDataModule`` with the run folder,
the safe checkpoint writer and the interrupt callback, and ``run_verb``, which the ``halluc-cl``
command, ``halluc_cl.api`` and a compare grid's cells all go through.
"""

from __future__ import annotations

import importlib
import os
import shutil
import warnings
from pathlib import Path

import yaml
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from halluc_cl.data.datamodule import FactDataModule
from halluc_cl.errors import ConfigError, HallucError, TrainingError, WriteError
from halluc_cl.experiments.config_files import config_args
from halluc_cl.experiments.config_hash import config_hash
from halluc_cl.io import RESOURCE_ERRNOS
from halluc_cl.runtime.checkpoint_io import SafeCheckpointIO, reading_checkpoint
from halluc_cl.runtime.signals import Interrupted
from halluc_cl.synthetic.resolve import is_synthetic, world_name
from halluc_cl.train.interrupt import InterruptCheckpoint, trainer_interruption
from halluc_cl.train.module import FactSFTModule
from halluc_cl.train.run_files import (
    FOLDER_LOGGERS,
    RunArtifacts,
    SaveRunConfig,
    artifacts_of,
    run_dir,
    version_name,
)
from halluc_cl.train.summary import hide_lightning_tips, use_parameter_summary

TRAINER_DEFAULTS = {
    "max_epochs": 25,  # as the shipped configs: 1 warm-up + 24 SFT epochs (not Lightning's 1000)
    "reload_dataloaders_every_n_epochs": 1,  # the warm-up phase serves Known facts only
    "num_sanity_val_steps": 0,
    "log_every_n_steps": 10,
    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
               "init_args": {"save_dir": "runs", "name": "fit"}},
}


VERBS = ("fit", "validate", "test")  # the LightningCLI subcommands halluc-cl runs (cli.VERBS)


class ParsedOnly(Exception):
    """Raised by ``HallucCLI(parse_only=True)`` with the resolved config, before anything is
    instantiated."""

    def __init__(self, resolved: dict) -> None:
        super().__init__("parsed")
        self.resolved = resolved


class HallucCLI(LightningCLI):
    """LightningCLI for FactSFTModule + FactDataModule with linked arguments."""

    _created: tuple[Path, ...] = ()  # the run folder and parents this command made, deepest first
    parse_only = False  # raise ParsedOnly after parsing (``resolved_config``)
    resolved: dict | None = None  # the subcommand's resolved config as plain data

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("save_config_callback", SaveRunConfig)  # config.yaml in the run folder
        hide_lightning_tips()
        super().__init__(*args, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """LightningCLI's subcommands that halluc-cl runs (``VERBS``)."""
        return {k: v for k, v in LightningCLI.subcommands().items() if k in VERBS}

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(RunArtifacts, "artifacts")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults({"checkpoint.save_last": True})
        parser.link_arguments("model.model", "data.tokenizer")
        parser.link_arguments("model.warmup_epochs", "data.warmup_epochs")

    def before_instantiate_classes(self) -> None:
        cfg = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        source, model = cfg["data"]["source"], cfg["model"]["model"]
        if is_synthetic(source) and is_synthetic(model) and \
                world_name(source) != world_name(model):
            raise ConfigError(f"data.source {source!r} and model.model {model!r} name different "
                              "synthetic worlds")
        if cfg.get("weights_only") is False:
            raise ConfigError("--weights_only false is not supported: halluc-cl loads checkpoints "
                              "with weights_only=True only (no pickled code runs)")
        _link_loggers(cfg)
        full = yaml.safe_load(self.parser.dump(self.config, skip_validation=True))
        self.resolved = full.get(self.subcommand, full) if self.subcommand else full
        if self.parse_only:
            raise ParsedOnly(self.resolved)

    # private: LightningCLI reads the checkpoint's hyperparameters here, and no public hook
    # wraps that read (tests/test_lightning_private.py)
    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        with reading_checkpoint(self.config[subcommand].get("ckpt_path") if subcommand else None):
            super()._parse_ckpt_path()

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        self.model.connect(self.datamodule)  # the one handoff: methods see data through it

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = SafeCheckpointIO()
        trainer.callbacks.append(InterruptCheckpoint())  # SIGTERM / Ctrl-C: stop with a checkpoint
        use_parameter_summary(trainer.callbacks)
        return trainer

    def _prepare_run_dir(self) -> None:
        """Refuse a run folder holding a finished run (unless ``artifacts.overwrite``) or one
        that cannot be written, before anything is written; point the checkpoints there."""
        trainer = self.trainer
        artifacts = artifacts_of(trainer)
        if not trainer.is_global_zero or artifacts is None:
            return
        run = artifacts.run_folder(trainer)  # rank 0 chooses; RunArtifacts.setup shares it
        if (run / "summary.json").exists() and not artifacts.overwrite:
            raise ConfigError(f"{run} already holds a finished run (summary.json); choose another "
                              "--artifacts.version, or pass --artifacts.overwrite true to write "
                              "over it")
        created = tuple(d for d in (run, *run.parents) if not d.exists())
        try:
            run.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the run folder {run}: {exc.strerror}") from None
        if not os.access(run, os.W_OK | os.X_OK):
            raise ConfigError(f"the run folder {run} is not writable")
        self._created = created
        artifacts.point_checkpoints(trainer, run)  # before Lightning looks for --ckpt_path last
        artifacts.config_hash = config_hash(self.resolved or {})
        resuming = self.subcommand == "fit" and self.config[self.subcommand].get("ckpt_path")
        if resuming and (run / "metrics.csv").is_file():
            artifacts.keep_metrics_of(run / "metrics.csv")  # a resume in an interrupted run's folder

    before_fit = before_validate = before_test = _prepare_run_dir

    # private: the one place that runs the Trainer verb inside LightningCLI.__init__ (the
    # public run=False would drop the verbs' own parsers; tests/test_lightning_private.py)
    def _run_subcommand(self, subcommand: str) -> None:
        failed = True
        try:
            self._run_trainer_verb(subcommand)
            failed = False
        finally:  # a W&B run ends with its command (compare runs several fits in one process)
            if any(isinstance(lg, WandbLogger) for lg in self.trainer.loggers):
                import wandb

                wandb.finish(exit_code=int(failed))

    def _run_trainer_verb(self, subcommand: str) -> None:
        try:
            with warnings.catch_warnings():
                if subcommand == "fit" and self.config[subcommand].get("ckpt_path"):
                    # a resume in its own run folder: the folder is meant to hold files, and
                    # RunArtifacts keeps the metrics.csv rows the warning says are deleted
                    warnings.filterwarnings("ignore", message=".* directory .* exists and is "
                                                              "not empty")
                super()._run_subcommand(subcommand)
        except FloatingPointError as exc:  # FactSFTModule.training_step: non-finite loss
            ckpt = getattr(self.trainer.checkpoint_callback, "last_model_path", "") or \
                getattr(self.trainer.checkpoint_callback, "best_model_path", "")
            kept = f"the last checkpoint is kept: {ckpt}" if ckpt else "no checkpoint was saved"
            raise TrainingError(f"{exc}; training stopped (lower the learning rate or the "
                                f"regularizer weights); {kept}") from None
        except HallucError:
            self._remove_created_run_dir()
            raise
        except OSError as exc:  # a full disk under Lightning's own writers (metrics.csv)
            error = failed_write(exc, run_dir(self.trainer))
            if error is None:
                raise
            self._remove_created_run_dir()
            raise error from None
        except (SIGTERMException, Interrupted) as exc:  # SIGTERMException is a SystemExit
            interrupted = trainer_interruption(exc, self.trainer, subcommand == "fit")
            if not interrupted.resume:
                self._remove_created_run_dir()
            raise interrupted from None

    def _remove_created_run_dir(self) -> None:
        """Remove the run folder this command created if the error left no checkpoint in it."""
        if not self._created or any((self._created[0] / "checkpoints").glob("*")):
            return
        shutil.rmtree(self._created[0], ignore_errors=True)
        for parent in self._created[1:]:  # parents it created, while they are empty
            try:
                parent.rmdir()
            except OSError:
                break


def failed_write(exc: BaseException, folder: Path | None = None) -> WriteError | None:
    """The ``WriteError`` behind ``exc``, or one for an ``OSError`` of a full disk or quota.

    A failed checkpoint write ends the fit, and the logger's last save can fail on the same
    full disk while Lightning shuts down: the first error is kept, not the second.

    Args:
        exc: The error.
        folder: Where the command writes, named when the error does not name its file.
    """
    seen, chain = set(), exc
    while chain is not None and id(chain) not in seen:
        if isinstance(chain, WriteError):
            return chain
        seen.add(id(chain))
        chain = chain.__context__
    if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
        target = exc.filename or (f"into {folder}" if folder else "a result file")
        return WriteError(f"cannot write {target}: {exc.strerror}")
    return None


def _link_loggers(cfg) -> None:
    """Point the loggers at the run folder that ``artifacts.root/name/version`` set: CSV and
    TensorBoard loggers write into it, and a W&B run is named ``<name>/<version>`` when both
    are set (compare's cells). Unset parts stay with the loggers (``RunArtifacts``)."""
    art = cfg.get("artifacts") or {}
    parts = {"save_dir": art.get("root"), "name": art.get("name"), "version": art.get("version")}
    loggers = cfg.get("trainer", {}).get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init = getattr(logger, "init_args", None)
        cls = _logger_class(getattr(logger, "class_path", None))
        if init is None or cls is None:
            continue
        if issubclass(cls, FOLDER_LOGGERS):
            for key, value in parts.items():
                if value is not None:
                    init[key] = value
        elif issubclass(cls, WandbLogger) and None not in (parts["name"], parts["version"]):
            init["name"] = f"{parts['name']}/{version_name(parts['version'])}"


def _logger_class(class_path: str | None) -> type | None:
    module, _, name = (class_path or "").rpartition(".")
    try:
        return getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError):
        return None


def resolved_config(args: list[str]) -> dict:
    """The resolved config of ``halluc-cl <args>`` (a Trainer verb), parsed but not run:
    nothing is instantiated, built or written."""
    cli = type("ParseOnlyCLI", (HallucCLI,), {"parse_only": True})
    try:
        _build(cli, args)
    except ParsedOnly as parsed:
        return parsed.resolved
    raise RuntimeError("the parse-only CLI did not stop after parsing")


def run_verb(args: list[str]) -> HallucCLI:
    """Run ``halluc-cl <verb> <args>`` (a Trainer verb) in this process and return its CLI
    object (``.trainer``, ``.model``, ``.datamodule``).

    Raises:
        HallucError: a user error (a bad config, a missing file, a full disk...).
        Interrupted: SIGINT or SIGTERM stopped it (a fit first saves a checkpoint).
    """
    return _build(HallucCLI, args, save_config_kwargs={"overwrite": True})


def _build(cli: type[HallucCLI], args: list[str], **kwargs) -> HallucCLI:
    """``cli`` on ``args`` (never ``sys.argv``), with halluc-cl's defaults."""
    with warnings.catch_warnings():  # LightningCLI's note that ``args`` beats sys.argv
        warnings.filterwarnings("ignore", message=".*args parameter is intended.*")
        return cli(FactSFTModule, FactDataModule, args=config_args(args),
                   seed_everything_default=0, trainer_defaults=TRAINER_DEFAULTS,
                   parser_kwargs={"exit_on_error": False}, **kwargs)
