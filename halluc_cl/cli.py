"""The ``halluc-cl`` command.

    halluc-cl fit --config configs/distill.yaml          # train, evaluate, write the run folder
    halluc-cl fit --config distill                       # the same shipped config, from any folder
    halluc-cl validate --config configs/sft.yaml --ckpt_path <ckpt>
    halluc-cl evaluate --run runs/sft/version_0          # a saved model on the run's splits
    halluc-cl pretrain --world default                   # build the synthetic base model now
    halluc-cl compare --config configs/compare/paper.yaml  # methods x fractions x seeds, tables
    halluc-cl probe --model synthetic://tiny --source synthetic://tiny --out runs/probe/tiny.jsonl
    halluc-cl analyze attribution --run runs/sft/version_0       # flips vs similar new facts
    halluc-cl analyze keys --config configs/analysis/keys.yaml   # a mechanism study (H1-H3)
    halluc-cl fit --config configs/distill.yaml --print_config
    halluc-cl --help                                     # every command, one line each
    halluc-cl --version

Trainer verbs go to LightningCLI; other subcommands are typed functions run by jsonargparse.
A ``--config`` value is a file or the name of a shipped config (``config_files.py``), for
every command. User errors print one ``error: ...`` line and exit with code 2. SIGINT
(Ctrl-C) and SIGTERM print one ``error: interrupted (...) ...; resume with: ...`` line and
exit with 128 + the signal number (130, 143); a fit first saves a checkpoint to resume from
(docs/reliability.md).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import shutil
import sys
import warnings
from pathlib import Path

import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

import halluc_cl
from halluc_cl.analysis.studies import mechanism_study
from halluc_cl.checkpoint_io import SafeCheckpointIO, reading_checkpoint
from halluc_cl.config_files import SHIPPED, config_args, setting_folder
from halluc_cl.data.datamodule import FactDataModule
from halluc_cl.errors import ConfigError, HallucError, TrainingError, WriteError
from halluc_cl.experiments.compare import CHILD_ENV, compare, resolve_methods
from halluc_cl.experiments.config_hash import config_hash
from halluc_cl.experiments.evaluate import evaluate
from halluc_cl.experiments.interrupt import (
    GUARD,
    InterruptCheckpoint,
    Interrupted,
    handling_signals,
    trainer_interruption,
)
from halluc_cl.experiments.run_files import (
    FOLDER_LOGGERS,
    RunArtifacts,
    SaveRunConfig,
    artifacts_of,
    run_dir,
    version_name,
)
from halluc_cl.io import RESOURCE_ERRNOS
from halluc_cl.models.loading import is_synthetic, synthetic_world_name
from halluc_cl.models.module import FactSFTModule
from halluc_cl.probing.slick import probe

TRAINER_DEFAULTS = {
    "max_epochs": 25,  # as the shipped configs: 1 warm-up + 24 SFT epochs (not Lightning's 1000)
    "reload_dataloaders_every_n_epochs": 1,  # the warm-up phase serves Known facts only
    "num_sanity_val_steps": 0,
    "log_every_n_steps": 10,
    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
               "init_args": {"save_dir": "runs", "name": "fit"}},
}


# Trainer verbs (LightningCLI subcommands) -> their line in ``halluc-cl --help``
VERBS = {
    "fit": "Warm up, then fine-tune with the regularizers, evaluating every epoch; write the "
           "run folder.",
    "validate": "Evaluate a model or checkpoint (--ckpt_path) on every split.",
    "test": "Evaluate a model or checkpoint (--ckpt_path) once, logging test/<metric>.",
}


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
                synthetic_world_name(source) != synthetic_world_name(model):
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

    def _parse_ckpt_path(self) -> None:  # LightningCLI reads the checkpoint's hyperparameters
        subcommand = self.config.get("subcommand")
        with reading_checkpoint(self.config[subcommand].get("ckpt_path") if subcommand else None):
            super()._parse_ckpt_path()

    def instantiate_trainer(self, **kwargs):
        trainer = super().instantiate_trainer(**kwargs)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = SafeCheckpointIO()
        trainer.callbacks.append(InterruptCheckpoint())  # SIGTERM / Ctrl-C: stop with a checkpoint
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
        cli(FactSFTModule, FactDataModule, args=config_args(args), seed_everything_default=0,
            trainer_defaults=TRAINER_DEFAULTS, parser_kwargs={"exit_on_error": False})
    except ParsedOnly as parsed:
        return parsed.resolved
    raise RuntimeError("the parse-only CLI did not stop after parsing")


def pretrain(world: str = "default", force: bool = False) -> None:
    """Build (or rebuild with ``force``) the synthetic base model of a world and cache it.

    Args:
        world: Synthetic world preset.
        force: Rebuild even when a cached build exists.
    """
    from halluc_cl.models.pretrain import build_base_model

    out = build_base_model(world, force=force)
    print(f"base model: {out}")


def attribution(run: str, top_k: int = 3, shuffles: int = 100, seed: int = 0,
                hidden_layer: int | None = -1) -> None:
    """Attribute a finished fit's hallucinations to the new facts they resemble.

    Args:
        run: The fit's run folder (``summary.json``, ``config.yaml``, ``predictions/``).
        top_k: Neighbours (new training facts of the same relation) per flipped fact.
        shuffles: Random re-pairings of the shuffled baseline.
        seed: Seed of the re-pairings.
        hidden_layer: Layer of the base model's hidden states for the similarity neighbours
            (``null``: name-token neighbours only).
    """
    import json

    from halluc_cl.analysis.attribution import analyze_run

    print(json.dumps(analyze_run(run, top_k, shuffles, seed, hidden_layer), indent=2))


def rescore(grid: str, methods: list[str] | None = None, tables: str = "results") -> None:
    """Re-score a compare grid's final models by generation beside their one-forward scores.

    Args:
        grid: The compare output folder.
        methods: Methods to re-score (``null``: all of the table).
        tables: The table whose cells are re-scored (``<grid>/<tables>.csv``).
    """
    from halluc_cl.analysis.rescore import rescore as run_rescore

    run_rescore(grid, methods, tables)


COMMANDS = {"pretrain": pretrain, "compare": compare, "probe": probe, "evaluate": evaluate}
# commands whose ``methods`` map names to config files, read relative to the YAML listing them
GRIDS = (compare, mechanism_study)
# halluc-cl analyze <study> ...: attribution of one run, or a mechanism study's grid
ANALYSES = {"attribution": attribution, "rescore": rescore, **dict.fromkeys(
    ("keys", "overlap", "capacity", "behaviour"), mechanism_study)}


def _run_function(name: str, fn, args: list[str]) -> None:
    parser = ArgumentParser(prog=f"halluc-cl {name}", exit_on_error=False,
                            description=fn.__doc__.split("\n\n")[0])
    parser.add_function_arguments(fn, as_positional=False)
    parser.add_argument("--config", action="config")
    cfg = parser.parse_args(args)
    cfg.pop("config", None)
    kwargs = cfg.as_dict()
    if fn in GRIDS:  # a grid's configs: relative to the YAML that lists them
        kwargs["methods"] = resolve_methods(kwargs["methods"], setting_folder(args, "methods"))
    fn(**kwargs)


def _summary(fn) -> str:
    """The first sentence of a command function's docstring, on one line."""
    return " ".join(fn.__doc__.split("\n\n")[0].split()).replace("``", "`")


def _study_summary(name: str, fn) -> str:
    """A study's line: the title of its shipped config ``analysis/<name>.yaml`` if it has one."""
    path = SHIPPED / "analysis" / f"{name}.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    if isinstance(config, dict) and config.get("title"):
        return f"{config['title']} (--config analysis/{name})"
    return _summary(fn)


def usage() -> str:
    """``halluc-cl --help``: every command of ``VERBS``, ``COMMANDS`` and ``ANALYSES``."""
    rows = [*VERBS.items(), *((name, _summary(fn)) for name, fn in COMMANDS.items()),
            *((f"analyze {name}", _study_summary(name, fn)) for name, fn in ANALYSES.items())]
    width = max(len(name) for name, _ in rows) + 2
    lines = ["usage: halluc-cl <command> [--config FILE|NAME ...] [options]",
             "       halluc-cl <command> --help     every option of a command, documented",
             "       halluc-cl --version", "", halluc_cl.__doc__.strip(), "", "commands:"]
    lines += [f"  {name:<{width}}{text}" for name, text in rows]
    lines += ["", ("A --config value is a file or the name of a shipped config (distill, sft, "
                   "world/tiny, compare/paper, ...; see the README).")]
    return "\n".join(lines)


def version() -> str:
    """The installed package's version (``halluc_cl.__version__`` when it is not installed)."""
    try:
        return importlib.metadata.version("halluc-cl")
    except importlib.metadata.PackageNotFoundError:
        return halluc_cl.__version__


def _run(args: list[str]) -> None:
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return
    if args[0] == "--version":
        print(f"halluc-cl {version()}")
        return
    args = config_args(args)  # shipped names resolved, every config file read as UTF-8
    if args[0] in COMMANDS:
        _run_function(args[0], COMMANDS[args[0]], args[1:])
        return
    if args[0] == "analyze":
        if len(args) < 2 or args[1] not in ANALYSES:
            raise ConfigError(f"halluc-cl analyze needs a study: one of {sorted(ANALYSES)}")
        _run_function(f"analyze {args[1]}", ANALYSES[args[1]], args[2:])
        return
    if args[0] not in VERBS and not args[0].startswith("-"):
        raise ConfigError(f"unknown command {args[0]!r}; the commands are "
                          f"{', '.join([*VERBS, *COMMANDS, 'analyze'])} (halluc-cl --help)")
    HallucCLI(
        FactSFTModule, FactDataModule, args=args, seed_everything_default=0,
        trainer_defaults=TRAINER_DEFAULTS, parser_kwargs={"exit_on_error": False},
        save_config_kwargs={"overwrite": True},
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of the console script; ``args`` defaults to ``sys.argv[1:]``."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # lightning-internal deprecation
    warnings.filterwarnings("ignore", message=".*args parameter is intended.*")  # tools call main
    # evaluation metrics are computed from every process's gathered outcomes (evaluation_hooks)
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed.*")
    args = sys.argv[1:] if args is None else list(args)
    nested = GUARD.active  # a command run by another one (compare's cells) reports nothing
    try:
        with handling_signals():
            _run(args)
    except Interrupted as exc:  # SIGINT / SIGTERM: one line, exit code 128 + signal number
        if nested:
            raise
        if not os.environ.get(CHILD_ENV):  # a grid's child fit: the grid reports the stop
            _report(exc.message(args))
        raise SystemExit(exc.exit_code) from None
    except HallucError as exc:
        _fail(str(exc))
    except MisconfigurationException as exc:  # Lightning's own config errors
        _fail(" ".join(str(exc).split()))
    except OSError as exc:  # a full disk outside the run files' own writers
        error = failed_write(exc)
        if error is None:
            raise
        _fail(str(error))
    except Exception as exc:  # argument errors from jsonargparse
        cause = _user_error(exc)
        if cause is not None:  # e.g. a plugin's ConfigError that jsonargparse wrapped
            _fail(str(cause))
        if type(exc).__name__ == "ArgumentError" or exc.__class__.__module__.startswith("argparse"):
            _fail(_argument_error(str(exc)))
        raise


def _argument_error(text: str) -> str:
    """jsonargparse's multi-line message on one line; for a bad ``class_path`` just its key and
    the reason, not every Union member it tried."""
    lines = text.strip().splitlines()
    start = next((i for i, line in enumerate(lines) if "Problem with given class_path" in line),
                 None)
    if start is not None:
        indent = len(lines[start]) - len(lines[start].lstrip())
        end = next((j for j in range(start + 1, len(lines))
                    if len(lines[j]) - len(lines[j].lstrip()) <= indent), len(lines))
        lines = lines[:1] + [lines[start].strip().lstrip("- ")] + lines[start + 1:end]
    return " ".join(line.strip() for line in lines if line.strip())


def _user_error(exc: BaseException) -> HallucError | None:
    """The HallucError an exception was raised from (``raise ... from``), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, HallucError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__
    return None


def _fail(message: str) -> None:
    _report(message)
    raise SystemExit(2)


def _report(message: str) -> None:
    """Print ``error: <message>``, once: by the first process of a several-process fit (the
    others stop with the same error)."""
    if getattr(rank_zero_only, "rank", 0) == 0:
        print(f"error: {message}", file=sys.stderr)


if __name__ == "__main__":
    main()
