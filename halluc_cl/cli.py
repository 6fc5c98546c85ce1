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

This module parses the command line and calls ``halluc_cl.api``; nothing imports it. Trainer
verbs go to LightningCLI (``experiments/fit.py``); the other commands are typed functions whose
arguments jsonargparse parses. A ``--config`` value is a file or the name of a shipped config
(``experiments/config_files.py``), for every command. User errors print one ``error: ...``
line and exit with code 2. SIGINT
(Ctrl-C) and SIGTERM print one ``error: interrupted (...) ...; resume with: ...`` line and
exit with 128 + the signal number (130, 143); a fit first saves a checkpoint to resume from
(docs/reliability.md).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import os
import sys
import warnings

import yaml

import halluc_cl
from halluc_cl.errors import ConfigError, HallucError
from halluc_cl.experiments.config_files import SHIPPED, config_args, setting_folder
from halluc_cl.runtime.signals import CHILD_ENV, Interrupted, handling_signals

# Every command and its one-line summary. Written here, not read from the functions, so that
# `halluc-cl --help` and `--version` import neither torch nor Lightning and answer at once;
# tests/test_cli.py checks each line against the first sentence of its function's docstring.
VERBS = {  # LightningCLI's subcommands (experiments/fit.py)
    "fit": "Warm up, then fine-tune with the methods, evaluating every epoch; write the run "
           "folder.",
    "validate": "Evaluate a model or checkpoint (--ckpt_path) on every split.",
    "test": "Evaluate a model or checkpoint (--ckpt_path) once, logging test/<metric>.",
}
COMMANDS = {  # halluc-cl <name>: api.<name>
    "pretrain": "Build (or rebuild with `force`) the synthetic base model of a world and cache "
                "it.",
    "compare": "Fit every method × unknown fraction × seed (reusing finished cells) and "
               "tabulate them.",
    "probe": "Probe what `model` knows of `source`'s facts and write them with SliCK "
             "categories.",
    "evaluate": "Evaluate a model on facts without training: accuracy and abstention per fact "
                "set.",
}
ANALYSES = {  # halluc-cl analyze <name>: one run's attribution, a re-scoring, a mechanism study
    "attribution": "Attribute a finished fit's hallucinations to the new facts they resemble.",
    "rescore": "Re-score the cells of one table of a compare grid by generation (module "
               "docstring).",
    **dict.fromkeys(STUDIES := ("keys", "overlap", "capacity", "behaviour"),
                    "A mechanism study's grid and its table."),
}
# commands whose ``methods`` map names to config files, read relative to the YAML listing them
GRIDS = ("compare", *(f"analyze {study}" for study in STUDIES))


def _printed(fn, show):
    """``fn`` for the command line: its result is printed by ``show`` (signature and
    docstring, which ``--help`` shows, are ``fn``'s)."""
    @functools.wraps(fn)
    def command(*args, **kwargs):
        print(show(fn(*args, **kwargs)))

    return command


def command_function(name: str):
    """The api function that runs ``halluc-cl <name>`` (``analyze <study>`` for a study):
    imported here, when a command runs, not when ``--help`` is asked for."""
    from halluc_cl import api

    if name == "pretrain":
        return _printed(api.pretrain, lambda out: f"base model: {out}")
    if name == "analyze attribution":
        return _printed(api.attribution, lambda result: json.dumps(result, indent=2))
    if name == "analyze rescore":
        return api.rescore
    if name in GRIDS[1:]:
        return api.mechanism_study
    return getattr(api, name)


def _run_function(name: str, args: list[str]) -> None:
    from jsonargparse import ArgumentParser

    fn = command_function(name)
    parser = ArgumentParser(prog=f"halluc-cl {name}", exit_on_error=False,
                            description=fn.__doc__.split("\n\n")[0])
    parser.add_function_arguments(fn, as_positional=False)
    parser.add_argument("--config", action="config")
    cfg = parser.parse_args(args)
    cfg.pop("config", None)
    kwargs = cfg.as_dict()
    if name in GRIDS:  # a grid's configs: relative to the YAML that lists them
        from halluc_cl.experiments.grid import resolve_methods

        kwargs["methods"] = resolve_methods(kwargs["methods"], setting_folder(args, "methods"))
    fn(**kwargs)


def summary(fn) -> str:
    """The first sentence of a command function's docstring, on one line (what ``VERBS``,
    ``COMMANDS`` and ``ANALYSES`` hold)."""
    return " ".join(fn.__doc__.split("\n\n")[0].split()).replace("``", "`")


def _study_summary(name: str, default: str) -> str:
    """A study's line: the title of its shipped config ``analysis/<name>.yaml`` if it has one."""
    path = SHIPPED / "analysis" / f"{name}.yaml"
    config = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    if isinstance(config, dict) and config.get("title"):
        return f"{config['title']} (--config analysis/{name})"
    return default


def usage() -> str:
    """``halluc-cl --help``: every command of ``VERBS``, ``COMMANDS`` and ``ANALYSES``."""
    rows = [*VERBS.items(), *COMMANDS.items(),
            *((f"analyze {name}", _study_summary(name, text)) for name, text in ANALYSES.items())]
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
        _run_function(args[0], args[1:])
    elif args[0] == "analyze":
        if len(args) < 2 or args[1] not in ANALYSES:
            raise ConfigError(f"halluc-cl analyze needs a study: one of {sorted(ANALYSES)}")
        _run_function(f"analyze {args[1]}", args[2:])
    elif args[0] not in VERBS and not args[0].startswith("-"):
        raise ConfigError(f"unknown command {args[0]!r}; the commands are "
                          f"{', '.join([*VERBS, *COMMANDS, 'analyze'])} (halluc-cl --help)")
    else:
        from halluc_cl.experiments.fit import run_verb

        run_verb(args)
    from halluc_cl.distributed import close_process_group

    close_process_group()  # only after success: a failed rank must not wait for the others


def main(args: list[str] | None = None) -> None:
    """Entry point of the console script; ``args`` defaults to ``sys.argv[1:]``."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # lightning-internal deprecation
    # evaluation metrics are computed from every process's gathered outcomes (evaluation_hooks)
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed.*")
    args = sys.argv[1:] if args is None else list(args)
    try:
        with handling_signals():
            _run(args)
    except Interrupted as exc:  # SIGINT / SIGTERM: one line, exit code 128 + signal number
        if not os.environ.get(CHILD_ENV):  # a grid's child fit: the grid reports the stop
            _report(exc.message(args))
        raise SystemExit(exc.exit_code) from None
    except HallucError as exc:
        _fail(str(exc))
    except OSError as exc:  # a full disk outside the run files' own writers
        from halluc_cl.experiments.fit import failed_write

        error = failed_write(exc)
        if error is None:
            raise
        _fail(str(error))
    except Exception as exc:  # argument errors from jsonargparse
        if _lightning_config_error(exc):
            _fail(" ".join(str(exc).split()))
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


def _lightning_config_error(exc: BaseException) -> bool:
    """Whether ``exc`` is Lightning's own ``MisconfigurationException`` (looked up only if
    Lightning is loaded: an error raised before any Lightning import cannot be one)."""
    module = sys.modules.get("lightning.pytorch.utilities.exceptions")
    return module is not None and isinstance(exc, module.MisconfigurationException)


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
    rank_zero = sys.modules.get("lightning.pytorch.utilities.rank_zero")  # set once loaded
    if rank_zero is None or getattr(rank_zero.rank_zero_only, "rank", 0) == 0:
        print(f"error: {message}", file=sys.stderr)


if __name__ == "__main__":
    main()
