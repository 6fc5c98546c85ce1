"""The ``halluc-cl`` command.

    halluc-cl fit --config configs/distill.yaml          # train, evaluate, write the run folder
    halluc-cl validate --config configs/sft.yaml --ckpt_path <ckpt>
    halluc-cl pretrain --world default                   # build the synthetic base model now
    halluc-cl compare --config configs/compare/paper.yaml  # methods x fractions x seeds, tables
    halluc-cl probe --model synthetic://tiny --source synthetic://tiny --out runs/probe/tiny.jsonl
    halluc-cl analyze attribution --run runs/sft/version_0       # flips vs similar new facts
    halluc-cl fit --config configs/distill.yaml --print_config

Trainer verbs go to LightningCLI; other subcommands are typed functions run by jsonargparse.
User errors print one ``error: ...`` line and exit with code 2.
"""

from __future__ import annotations

import os
import sys
import warnings

from jsonargparse import ArgumentParser
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from halluc_cl.data.datamodule import FactDataModule
from halluc_cl.errors import ConfigError, HallucError
from halluc_cl.experiments.compare import compare
from halluc_cl.experiments.run_files import RunArtifacts
from halluc_cl.models.loading import is_synthetic, synthetic_world_name
from halluc_cl.models.module import FactSFTModule
from halluc_cl.probing.slick import probe

TRAINER_DEFAULTS = {
    "reload_dataloaders_every_n_epochs": 1,  # the warm-up phase serves Known facts only
    "num_sanity_val_steps": 0,
    "log_every_n_steps": 10,
    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
               "init_args": {"save_dir": "runs", "name": "fit"}},
}


class HallucCLI(LightningCLI):
    """LightningCLI for FactSFTModule + FactDataModule with linked arguments."""

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


def pretrain(world: str = "default", force: bool = False) -> None:
    """Build (or rebuild with ``force``) the synthetic base model of a world and cache it.

    Args:
        world: Synthetic world preset.
        force: Rebuild even when a cached build exists.
    """
    from halluc_cl.models.pretrain import build_base_model

    out = build_base_model(world, force=force)
    print(f"base model: {out}")


def attribution(run: str, top_k: int = 3, shuffles: int = 100, seed: int = 0) -> None:
    """Attribute a finished fit's hallucinations to the new facts they resemble.

    Args:
        run: The fit's run folder (``summary.json``, ``config.yaml``, ``predictions/``).
        top_k: Neighbours (new training facts of the same relation) per flipped fact.
        shuffles: Random re-pairings of the shuffled baseline.
        seed: Seed of the re-pairings.
    """
    import json

    from halluc_cl.analysis.attribution import analyze_run

    print(json.dumps(analyze_run(run, top_k, shuffles, seed), indent=2))


COMMANDS = {"pretrain": pretrain, "compare": compare, "probe": probe}
ANALYSES = {"attribution": attribution}  # halluc-cl analyze <study> ...


def _run_function(name: str, fn, args: list[str]) -> None:
    parser = ArgumentParser(prog=f"halluc-cl {name}", exit_on_error=False,
                            description=fn.__doc__.split("\n\n")[0])
    parser.add_function_arguments(fn, as_positional=False)
    parser.add_argument("--config", action="config")
    cfg = parser.parse_args(args)
    cfg.pop("config", None)
    fn(**cfg.as_dict())


def _run(args: list[str], from_argv: bool) -> None:
    if args and args[0] in COMMANDS:
        _run_function(args[0], COMMANDS[args[0]], args[1:])
        return
    if args and args[0] == "analyze":
        if len(args) < 2 or args[1] not in ANALYSES:
            raise ConfigError(f"halluc-cl analyze needs a study: one of {sorted(ANALYSES)}")
        _run_function(f"analyze {args[1]}", ANALYSES[args[1]], args[2:])
        return
    HallucCLI(
        FactSFTModule, FactDataModule, args=None if from_argv else args,
        seed_everything_default=0,
        trainer_defaults=TRAINER_DEFAULTS, parser_kwargs={"exit_on_error": False},
        save_config_kwargs={"overwrite": True},
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of the console script; ``args`` defaults to ``sys.argv[1:]``."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # lightning-internal deprecation
    warnings.filterwarnings("ignore", message=".*args parameter is intended.*")  # tools call main
    from_argv = args is None
    args = sys.argv[1:] if from_argv else list(args)
    try:
        _run(args, from_argv)
    except HallucError as exc:
        _fail(str(exc))
    except MisconfigurationException as exc:  # Lightning's own config errors
        _fail(" ".join(str(exc).split()))
    except Exception as exc:  # argument errors from jsonargparse
        if type(exc).__name__ == "ArgumentError" or exc.__class__.__module__.startswith("argparse"):
            _fail(" ".join(line.strip() for line in str(exc).strip().splitlines()))
        raise


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    main()
