"""The comparison grid: fit every method × unknown fraction × seed, then tables and plots.

    halluc-cl compare --config configs/compare/paper.yaml
    halluc-cl compare --config configs/compare/tiny.yaml --seeds '[0, 1]'   # a CPU smoke run

A cell is one ``halluc-cl fit`` of one method (its config files given together, as repeated
``--config``) with one unknown fraction X and one seed (``seed_everything`` and
``data.split_seed``). A method whose overlay config sets ``data.unknown_fraction`` (the
Known-only control) keeps that fraction. Cell ``<method>/unk<X>_seed<seed>`` lives in
``<out>/runs/``. Finished cells are reused: a cell reruns only when its ``summary.json`` is
missing (a killed run) or the hash in its ``cell.json`` (config texts, cell arguments,
``fit_args``) no longer matches. An interrupted cell whose hash matches resumes from its
``checkpoints/last.ckpt``; any other unfinished cell starts again from a clean folder.
Results go to ``<out>/results.csv``, ``<out>/results.md`` and ``<out>/*.png``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from halluc_cl.data.schema import atomic_write_text
from halluc_cl.errors import ConfigError
from halluc_cl.experiments.interrupt import GUARD, Interrupted
from halluc_cl.experiments.tables import CellResult, results_csv, results_markdown

_METHOD_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass(frozen=True)
class Cell:
    """One fit of the grid."""

    method: str
    configs: tuple[str, ...]
    unknown_fraction: float
    seed: int

    @property
    def version(self) -> str:
        return f"unk{self.unknown_fraction}_seed{self.seed}"

    @property
    def name(self) -> str:
        return f"{self.method}/{self.version}"

    def run_dir(self, out: Path) -> Path:
        return out / "runs" / self.method / self.version

    def settings(self) -> list[str]:
        """The ``fit`` arguments of this cell after its ``--config`` files (folder aside)."""
        return ["--seed_everything", str(self.seed), "--data.split_seed", str(self.seed),
                "--data.unknown_fraction", str(self.unknown_fraction),
                "--trainer.enable_progress_bar", "false", "--artifacts.save_model", "false"]

    def args(self) -> list[str]:
        """The ``fit`` arguments that define this cell (its folder aside)."""
        return [*(a for c in self.configs for a in ("--config", c)), *self.settings()]

    def digest(self, fit_args: list[str]) -> str:
        """sha256 of what decides the result: config texts, cell arguments, ``fit_args``.

        Config paths are left out (a moved but unchanged file is the same cell), and so is
        ``out`` (a moved grid folder is still complete).
        """
        texts = [Path(c).read_text(encoding="utf-8") for c in self.configs]
        blob = json.dumps({"configs": texts, "args": self.settings(),
                           "fit_args": list(fit_args)})
        return hashlib.sha256(blob.encode()).hexdigest()


def validate(methods: dict[str, list[str]], seeds: list[int],
             unknown_fractions: list[float]) -> None:
    """Raise ``ConfigError`` for an empty or malformed grid before any fit starts."""
    if not methods:
        raise ConfigError("compare needs at least one method in `methods`")
    for name, configs in methods.items():
        if not _METHOD_NAME.match(name):
            raise ConfigError(f"method name {name!r} must be a plain folder name "
                              "(letters, digits, '_', '-', '.', '+')")
        if not configs:
            raise ConfigError(f"method {name!r} lists no config files")
        for path in configs:
            if not Path(path).is_file():
                raise ConfigError(f"config file {path!r} of method {name!r} does not exist "
                                  f"(paths are relative to the working directory {Path.cwd()})")
    if not seeds:
        raise ConfigError("compare needs at least one seed in `seeds`")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds {seeds} repeat a value")
    if not unknown_fractions:
        raise ConfigError("compare needs at least one value in `unknown_fractions`")
    bad = [x for x in unknown_fractions if not 0.0 <= x <= 1.0]
    if bad:
        raise ConfigError(f"unknown fractions {bad} are outside [0, 1]")
    if len(set(unknown_fractions)) != len(unknown_fractions):
        raise ConfigError(f"unknown fractions {unknown_fractions} repeat a value")


def pinned_fraction(configs: list[str]) -> float | None:
    """``data.unknown_fraction`` set by a method's overlay configs (all but the first), if any.

    The first config is the method's base (``configs/sft.yaml`` sets 0.5 like any full run);
    the grid overrides its fraction. An overlay that sets one, such as
    ``configs/known_only.yaml`` (0.0), defines the method, so the grid keeps it.
    """
    pinned = None
    for path in configs[1:]:
        try:
            cfg = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path!r} is not valid YAML: {exc}") from None
        data = cfg.get("data") if isinstance(cfg, dict) else None
        if isinstance(data, dict) and data.get("unknown_fraction") is not None:
            pinned = float(data["unknown_fraction"])
    return pinned


def grid(methods: dict[str, list[str]], seeds: list[int],
         unknown_fractions: list[float]) -> list[Cell]:
    """All cells, methods in the order given, then fraction, then seed.

    A method whose overlay pins the unknown fraction (see ``pinned_fraction``) gets one cell
    per seed at that fraction instead of one per grid fraction.
    """
    cells: list[Cell] = []
    for method, configs in methods.items():
        pinned = pinned_fraction(configs)
        fractions = unknown_fractions if pinned is None else [pinned]
        cells += [Cell(method, tuple(configs), float(x), int(s))
                  for x in fractions for s in seeds]
    return cells


def is_done(cell: Cell, out: Path, digest: str) -> bool:
    """A finished cell: ``summary.json`` present and ``cell.json`` recording the same hash."""
    run = cell.run_dir(out)
    if not (run / "summary.json").is_file() or not (run / "cell.json").is_file():
        return False
    try:
        return json.loads((run / "cell.json").read_text())["sha256"] == digest
    except (json.JSONDecodeError, KeyError, TypeError):
        return False


def resumable(cell: Cell, out: Path, digest: str) -> Path | None:
    """The ``last.ckpt`` of an interrupted fit of this very cell (same hash), if any."""
    run = cell.run_dir(out)
    last = run / "checkpoints" / "last.ckpt"
    if (run / "summary.json").exists() or not last.is_file():
        return None
    try:
        return last if json.loads((run / "cell.json").read_text())["sha256"] == digest else None
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None


def run_cell(cell: Cell, out: Path, fit_args: list[str], digest: str) -> None:
    """Fit one cell in-process (resuming its interrupted fit, or from a clean folder), then
    record its hash."""
    from halluc_cl import cli  # imported here: cli imports this module for its COMMANDS

    run = cell.run_dir(out)
    last = resumable(cell, out, digest)
    if run.exists() and last is None:
        shutil.rmtree(run)  # a stale or killed run; never mix its files with the new ones
    record = {"sha256": digest, "method": cell.method, "configs": list(cell.configs),
              "unknown_fraction": cell.unknown_fraction, "seed": cell.seed,
              "fit_args": list(fit_args)}
    # recorded before the fit: an interrupted fit resumes only under the same settings
    atomic_write_text(run / "cell.json", json.dumps({**record, "finished": False}, indent=2) + "\n")
    cli.main(["fit", *cell.args(),
              "--trainer.logger.init_args.save_dir", str(out / "runs"),
              "--trainer.logger.init_args.name", cell.method,
              "--trainer.logger.init_args.version", cell.version, *fit_args,
              *(["--ckpt_path", str(last)] if last else [])])
    if not (run / "summary.json").is_file():
        raise RuntimeError(f"fit of {cell.name} finished without {run / 'summary.json'}")
    atomic_write_text(run / "cell.json", json.dumps({**record, "finished": True}, indent=2) + "\n")


def compare(
    methods: dict[str, list[str]],
    seeds: list[int] = [0, 1, 2],  # noqa: B006 (jsonargparse needs a literal)
    unknown_fractions: list[float] = [0.5],  # noqa: B006
    out: str = "runs/compare",
    fit_args: list[str] = [],  # noqa: B006
    plots: bool = True,
) -> list[CellResult]:
    """Fit every method × unknown fraction × seed (reusing finished cells) and tabulate them.

    Args:
        methods: Method name -> config files given together to ``halluc-cl fit``, in order
            (paths relative to the working directory). Table rows follow this order.
        seeds: Seeds; each sets ``seed_everything`` and ``data.split_seed``.
        unknown_fractions: Values of ``data.unknown_fraction`` (each in [0, 1]).
        out: Output folder: ``runs/`` (one run folder per cell), ``results.csv``,
            ``results.md`` and the plots.
        fit_args: Extra arguments appended to every fit, e.g. ``["--trainer.max_epochs", "5"]``.
        plots: Write the PNG plots.

    Returns:
        The finished cells with their summaries, in grid order.
    """
    validate(methods, seeds, unknown_fractions)
    root = Path(out)
    cells = grid(methods, seeds, unknown_fractions)
    for method, configs in methods.items():
        if (pinned := pinned_fraction(configs)) is not None:
            print(f"{method}: its configs set data.unknown_fraction {pinned:g}; "
                  "the grid's fractions do not apply to it")
    results, cell = [], None
    try:
        for cell in tqdm(cells, desc="compare", unit="cell"):
            GUARD.check()  # a signal that came as the previous cell's fit was finishing
            digest = cell.digest(fit_args)
            done = is_done(cell, root, digest)
            tqdm.write(f"{'skip' if done else 'resume' if resumable(cell, root, digest) else 'run'}"
                       f" {cell.name}")
            if not done:
                run_cell(cell, root, fit_args, digest)
            summary = json.loads((cell.run_dir(root) / "summary.json").read_text())
            results.append(CellResult(cell.method, cell.unknown_fraction, cell.seed,
                                      str(cell.run_dir(root)), summary))
    except Interrupted as exc:  # SIGINT / SIGTERM: finished cells stay; rerun to go on
        if cell is not None and exc.details:  # inside a cell's fit, which resumes next time
            exc.details = [f"in cell {cell.name}: {', '.join(exc.details)}"]
        finished = sum(is_done(c, root, c.digest(fit_args)) for c in cells)
        exc.details.append(f"{finished} of {len(cells)} cells finished")
        exc.resume = {}  # the same compare command
        raise
    atomic_write_text(root / "results.csv", results_csv(results))
    atomic_write_text(root / "results.md", results_markdown(results, list(methods)))
    written = [root / "results.csv", root / "results.md"]
    if plots:
        from halluc_cl.experiments.plots import write_plots

        written += write_plots(results, list(methods), root)
    print("\n" + (root / "results.md").read_text().rstrip())
    print("wrote " + ", ".join(str(p) for p in written))
    return results
