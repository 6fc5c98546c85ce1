"""The comparison grid: fit every method × unknown fraction × seed, then tables and plots.

    halluc-cl compare --config configs/compare/paper.yaml
    halluc-cl compare --config compare/paper --dry_run true    # list the cells, from any folder
    halluc-cl compare --config configs/compare/tiny.yaml --seeds '[0, 1]'   # a CPU smoke run

A method lists config files, each a path relative to the compare YAML that lists it (to the
working directory for ``compare(...)`` called from Python) or the name of a shipped config
(``config_files.py``: ``sft``, ``world/tiny``). ``out`` is an output location and stays
relative to the working directory.

A cell is one ``halluc-cl fit`` of one method (its config files given together, as repeated
``--config``) with one unknown fraction X, one training seed (``seed_everything``: data order,
extra inputs, initialisation of new weights) and one split seed (``data.split_seed``: which
facts are held out and trained on; by default equal to the training seed). A method whose
overlay config sets ``data.unknown_fraction`` (the Known-only control) keeps that fraction.

A cell's folder is ``<out>/runs/<method>/unk<X>_split<S>_seed<T>_<hash>``, where ``<hash>``
starts the sha256 of the cell's fully resolved ``fit`` config (``experiments/config_hash.py``:
config files, cell arguments, ``fit_args`` and every class default). A changed setting is a
new folder, never a silent reuse; a finished cell (``summary.json``) is reused, an interrupted
one resumes from its ``checkpoints/last.ckpt``. Results go to ``<out>/results.csv``,
``<out>/results.md`` (on ``report_split``, with the commit that made them) and the plots.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from halluc_cl.errors import ConfigError, TrainingError
from halluc_cl.experiments.config_files import find, looked_for, shown
from halluc_cl.experiments.config_hash import config_hash
from halluc_cl.experiments.fit import resolved_config, run_verb
from halluc_cl.experiments.tables import CellResult, Split, results_csv, results_markdown
from halluc_cl.io import atomic_write_text, read_text
from halluc_cl.runtime.signals import CHILD_ENV, GUARD, Interrupted

_METHOD_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass(frozen=True)
class Cell:
    """One fit of the grid; ``sha256`` is its resolved config's hash (``resolve``)."""

    method: str
    configs: tuple[str, ...]
    unknown_fraction: float
    seed: int
    split_seed: int | None = None
    sha256: str = field(default="", compare=False)
    processes: int = field(default=1, compare=False)  # of its fit (``resolve``)

    @property
    def data_seed(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed

    @property
    def version(self) -> str:
        return (f"unk{self.unknown_fraction}_split{self.data_seed}_seed{self.seed}"
                f"_{self.sha256[:10]}")

    @property
    def name(self) -> str:
        return f"{self.method}/{self.version}"

    def run_dir(self, out: Path) -> Path:
        return out / "runs" / self.method / self.version

    def folder_args(self, out: Path) -> list[str]:
        """The ``fit`` arguments that put this cell's run in ``run_dir(out)``, whatever the
        logger (CSV and TensorBoard loggers write there too; a W&B run is named
        ``<method>/<version>``)."""
        return ["--artifacts.root", str(out / "runs"), "--artifacts.name", self.method,
                "--artifacts.version", self.version]

    def settings(self) -> list[str]:
        """The ``fit`` arguments of this cell after its ``--config`` files (folder aside)."""
        return ["--seed_everything", str(self.seed), "--data.split_seed", str(self.data_seed),
                "--data.unknown_fraction", str(self.unknown_fraction),
                "--trainer.enable_progress_bar", "false", "--artifacts.save_model", "false"]

    def args(self) -> list[str]:
        """The ``fit`` arguments that define this cell (its folder aside)."""
        return [*(a for c in self.configs for a in ("--config", c)), *self.settings()]

    def resolve(self, fit_args: list[str]) -> Cell:
        """This cell with ``sha256`` set from its fully resolved config (parsed, not run)."""
        resolved = resolved_config(["fit", *self.args(), *fit_args])
        return Cell(self.method, self.configs, self.unknown_fraction, self.seed,
                    self.split_seed, config_hash(resolved), processes_of(resolved["trainer"]))


def resolve_methods(methods: dict[str, list[str]],
                    base: str | Path | None = None) -> dict[str, list[str]]:
    """Each method's configs as file paths: ``base / <entry>`` if that is a file (``base``: the
    folder of the YAML that lists them; the working directory when ``None``), else the shipped
    config the entry names (``config_files.find``).

    Raises:
        ConfigError: An entry is neither; the message lists where it was looked for.
    """
    resolved = {}
    for name, configs in methods.items():
        resolved[name] = []
        for entry in configs:
            path = find(entry, base)
            if path is None:
                raise ConfigError(f"config file {entry!r} of method {name!r} does not exist "
                                  f"(looked for {looked_for(entry, base)})")
            resolved[name].append(shown(path))
    return resolved


def validate(methods: dict[str, list[str]], seeds: list[int],
             unknown_fractions: list[float], split_seeds: list[int] | None = None) -> None:
    """Raise ``ConfigError`` for an empty or malformed grid before any fit starts (a config
    that cannot be found: ``resolve_methods``)."""
    if not methods:
        raise ConfigError("compare needs at least one method in `methods`")
    for name, configs in methods.items():
        if not _METHOD_NAME.match(name):
            raise ConfigError(f"method name {name!r} must be a plain folder name "
                              "(letters, digits, '_', '-', '.', '+')")
        if not configs:
            raise ConfigError(f"method {name!r} lists no config files")
    if not seeds:
        raise ConfigError("compare needs at least one seed in `seeds`")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds {seeds} repeat a value")
    if split_seeds is not None and len(split_seeds) != len(seeds):
        raise ConfigError(f"split_seeds {split_seeds} must pair with seeds {seeds} one to one")
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
    ``configs/method/known_only.yaml`` (0.0), defines the method, so the grid keeps it.
    """
    pinned = None
    for path in configs[1:]:
        try:
            cfg = yaml.safe_load(read_text(path)) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path!r} is not valid YAML: {exc}") from None
        data = cfg.get("data") if isinstance(cfg, dict) else None
        if isinstance(data, dict) and data.get("unknown_fraction") is not None:
            pinned = float(data["unknown_fraction"])
    return pinned


def grid(methods: dict[str, list[str]], seeds: list[int],
         unknown_fractions: list[float], split_seeds: list[int] | None = None) -> list[Cell]:
    """All cells (hash not yet resolved), methods in the order given, then fraction, then seed;
    ``split_seeds[i]`` pairs with ``seeds[i]`` (``None``: each split seed is its training seed).

    A method whose overlay pins the unknown fraction (see ``pinned_fraction``) gets one cell
    per seed at that fraction instead of one per grid fraction.
    """
    cells: list[Cell] = []
    for method, configs in methods.items():
        pinned = pinned_fraction(configs)
        fractions = unknown_fractions if pinned is None else [pinned]
        pairs = list(zip(seeds, split_seeds or [None] * len(seeds)))
        cells += [Cell(method, tuple(configs), float(x), int(s), sp)
                  for x in fractions for s, sp in pairs]
    return cells


def _recorded_hash(run: Path) -> str | None:
    try:
        return json.loads((run / "cell.json").read_text())["sha256"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None


def is_done(cell: Cell, out: Path) -> bool:
    """A finished cell: ``summary.json`` present and ``cell.json`` recording the same hash."""
    run = cell.run_dir(out)
    return (run / "summary.json").is_file() and _recorded_hash(run) == cell.sha256


def resumable(cell: Cell, out: Path) -> Path | None:
    """The ``last.ckpt`` of an interrupted fit of this very cell (same hash), if any."""
    run = cell.run_dir(out)
    last = run / "checkpoints" / "last.ckpt"
    if (run / "summary.json").exists() or not last.is_file():
        return None
    return last if _recorded_hash(run) == cell.sha256 else None


def processes_of(trainer: dict) -> int:
    """How many processes a fit with this resolved ``trainer`` config starts: devices (a count,
    a list, or ``auto``/``-1``: every visible GPU, else one) times ``num_nodes``."""
    devices = trainer.get("devices", "auto")
    if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
        devices = int(devices)
    if isinstance(devices, (list, tuple)):
        count = len(devices)
    elif isinstance(devices, str) and "," in devices:
        count = len([d for d in devices.split(",") if d.strip()])
    elif devices in ("auto", -1):
        gpu = str(trainer.get("accelerator", "auto")) in ("auto", "gpu", "cuda")
        count = torch.cuda.device_count() if gpu and torch.cuda.is_available() else 1
    else:
        count = int(devices)
    return max(1, count) * int(trainer.get("num_nodes") or 1)


def fit_in_subprocess(args: list[str], name: str) -> None:
    """``halluc-cl <args>`` as a child process, for a cell of several processes: Lightning
    starts a fit's other processes by running the command line again, which must be the fit,
    not the whole grid. A signal to the grid is passed on to the fit, which stops at its next
    safe point with a checkpoint (``train/interrupt.py``)."""
    proc = subprocess.Popen([sys.executable, "-m", "halluc_cl.cli", *args],
                            env={**os.environ, CHILD_ENV: "1"})
    try:
        code = proc.wait()
    except Interrupted as exc:
        proc.send_signal(exc.signum)
        proc.wait()
        raise
    if code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        raise Interrupted(code - 128)
    if code != 0:
        raise TrainingError(f"the fit of {name} failed with exit code {code} (its error is "
                            "printed above)")


def run_cell(cell: Cell, out: Path, fit_args: list[str], keep_checkpoints: bool = True) -> None:
    """Fit one cell in-process (resuming its interrupted fit, or from a clean folder), then
    record its hash; without ``keep_checkpoints`` the finished cell's ``checkpoints/`` go."""
    run = cell.run_dir(out)
    last = resumable(cell, out)
    if run.exists() and last is None:
        shutil.rmtree(run)  # a stale or killed run; never mix its files with the new ones
    record = {"sha256": cell.sha256, "method": cell.method, "configs": list(cell.configs),
              "unknown_fraction": cell.unknown_fraction, "seed": cell.seed,
              "split_seed": cell.data_seed, "fit_args": list(fit_args)}
    # recorded before the fit: an interrupted fit resumes only under the same settings
    atomic_write_text(run / "cell.json", json.dumps({**record, "finished": False}, indent=2) + "\n")
    args = ["fit", *cell.args(), *cell.folder_args(out), *fit_args,
            *(["--ckpt_path", str(last)] if last else [])]
    if cell.processes > 1:
        fit_in_subprocess(args, cell.name)
    else:
        run_verb(args)
    if not (run / "summary.json").is_file():
        raise RuntimeError(f"fit of {cell.name} finished without {run / 'summary.json'}")
    atomic_write_text(run / "cell.json", json.dumps({**record, "finished": True}, indent=2) + "\n")
    if not keep_checkpoints:  # the cell is finished: nothing resumes from them
        shutil.rmtree(run / "checkpoints", ignore_errors=True)


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``"i/n"`` as ``(i, n)``; ``None`` is the whole grid, ``(0, 1)``."""
    if shard is None:
        return 0, 1
    try:
        index, count = (int(x) for x in str(shard).split("/"))
    except ValueError:
        index = count = -1
    if not 0 <= index < count:
        raise ConfigError(f"shard must be i/n with 0 <= i < n (e.g. 0/4), got {shard!r}")
    return index, count


@contextmanager
def cell_lock(cell: Cell, out: Path) -> Iterator[bool]:
    """Hold ``<out>/runs/<method>/.<version>.lock`` while the cell is fitted, so that two
    commands on one output folder (two shards, or a rerun beside a running grid) never fit,
    resume or delete the same cell at once. Yields ``False``, without waiting, when another
    process holds it."""
    run = cell.run_dir(out)
    run.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(run.parent / f".{run.name}.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def compare(
    methods: dict[str, list[str]],
    seeds: list[int] = [0, 1, 2],  # noqa: B006 (jsonargparse needs a literal)
    unknown_fractions: list[float] = [0.5],  # noqa: B006
    out: str = "runs/compare",
    fit_args: list[str] = [],  # noqa: B006
    plots: bool = True,
    split_seeds: list[int] | None = None,
    report_split: Split = "test",
    cost_reference: str = "sft",
    paired_with: list[str] = ["sft", "known_only"],  # noqa: B006
    dry_run: bool = False,
    tables: str = "results",
    shard: str | None = None,
    keep_checkpoints: bool = True,
) -> list[CellResult]:
    """Fit every method × unknown fraction × seed (reusing finished cells) and tabulate them.

    Args:
        methods: Method name -> config files given together to ``halluc-cl fit``, in order:
            paths (relative to the working directory here; ``halluc-cl compare`` reads those
            of a YAML relative to that YAML) or shipped config names such as ``sft``. Table
            rows follow this order.
        seeds: Training seeds (``seed_everything``).
        unknown_fractions: Values of ``data.unknown_fraction`` (each in [0, 1]).
        out: Output folder, relative to the working directory: ``runs/`` (one run folder per
            cell), ``results.csv``, ``results.md`` and the plots.
        fit_args: Extra arguments appended to every fit, e.g. ``["--trainer.max_epochs", "5"]``.
        plots: Write the PNG plots.
        split_seeds: ``data.split_seed`` of each training seed, paired one to one (``None``:
            the training seed itself).
        report_split: The held-out split the tables show: ``test`` (reporting) or ``val``
            (a selection grid: settings are chosen on it, never on ``test``).
        cost_reference: The method whose mean cost is 1 in the cost column; on a ``val``
            grid also the method whose new-fact accuracy the selection rule's bar is 0.9× of.
        paired_with: Methods every other method is compared with, paired by seed and fact
            (per-seed differences with t-intervals, exact McNemar on per-fact flips), those
            present in the grid.
        dry_run: List every cell with its config hash and state, and fit nothing.
        tables: Base name of the table files (``<tables>.csv``, ``<tables>.md``; plots get
            the prefix ``<tables>_`` unless it is ``results``): grids that share an ``out``
            folder, and so reuse each other's identical cells, keep their own tables.
        shard: ``i/n``: run only the cells ``i, i + n, …`` of the grid (``0 <= i < n``), e.g.
            ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT`` in a Slurm array. The tables are
            written by whichever command finds every cell finished.
        keep_checkpoints: Keep each finished cell's ``checkpoints/`` (``last.ckpt``, which
            ``halluc-cl analyze rescore`` reads). False deletes them once the cell's summary
            is written (a SmolLM2 distillation cell's two checkpoints, with the optimizer
            state and the teacher, take 4.3 GB).

    Returns:
        The finished cells with their summaries, in grid order (none on a dry run).
    """
    validate(methods, seeds, unknown_fractions, split_seeds)
    methods = resolve_methods(methods)
    if report_split not in ("test", "val"):
        raise ConfigError(f"report_split must be test or val, got {report_split!r}")
    if not _METHOD_NAME.match(tables):
        raise ConfigError(f"tables {tables!r} must be a plain file name")
    root = Path(out)
    index, count = parse_shard(shard)
    cells = [c.resolve(fit_args) for c in grid(methods, seeds, unknown_fractions, split_seeds)]
    mine = cells[index::count]
    for method, configs in methods.items():
        if (pinned := pinned_fraction(configs)) is not None:
            print(f"{method}: its configs set data.unknown_fraction {pinned:g}; "
                  "the grid's fractions do not apply to it")
    if dry_run:
        for c in mine:
            state = "done" if is_done(c, root) else "resume" if resumable(c, root) else "to run"
            print(f"{c.sha256[:16]}  {state:<7} {c.name}  {' '.join(c.args())}")
        print(f"{len(mine)} cells, {sum(is_done(c, root) for c in mine)} done")
        return []
    busy, cell = [], None
    try:
        for cell in tqdm(mine, desc="compare", unit="cell"):
            GUARD.check()  # a signal that came as the previous cell's fit was finishing
            with cell_lock(cell, root) as locked:
                if not locked:  # another command is fitting it
                    tqdm.write(f"busy {cell.name} (another command is fitting it)")
                    busy.append(cell)
                    continue
                done = is_done(cell, root)
                tqdm.write(f"{'skip' if done else 'resume' if resumable(cell, root) else 'run'}"
                           f" {cell.name}")
                if not done:
                    run_cell(cell, root, fit_args, keep_checkpoints)
    except Interrupted as exc:  # SIGINT / SIGTERM: finished cells stay; rerun to go on
        if cell is not None and exc.details:  # inside a cell's fit, which resumes next time
            exc.details = [f"in cell {cell.name}: {', '.join(exc.details)}"]
        finished = sum(is_done(c, root) for c in cells)
        exc.details.append(f"{finished} of {len(cells)} cells finished")
        exc.resume = {}  # the same compare command
        raise
    unfinished = [c for c in cells if not is_done(c, root)]
    if unfinished:
        print(f"{len(cells) - len(unfinished)} of {len(cells)} cells finished ({len(busy)} being "
              "fitted by another command); the tables are written when every cell is: run "
              "this command again (without --shard) once the others are done")
        return []
    results = [CellResult(c.method, c.unknown_fraction, c.seed, str(c.run_dir(root)),
                          json.loads((c.run_dir(root) / "summary.json").read_text()), c.data_seed)
               for c in cells]
    commits = sorted({str(r.summary.get("git_commit")) for r in results})
    provenance = f"Made by `halluc-cl compare` into `{out}` at commit {', '.join(commits)}."
    atomic_write_text(root / f"{tables}.csv", results_csv(results, report_split, cost_reference))
    atomic_write_text(root / f"{tables}.md", results_markdown(
        results, list(methods), report_split, cost_reference, provenance, tuple(paired_with)))
    written = [root / f"{tables}.csv", root / f"{tables}.md"]
    if plots:
        from halluc_cl.experiments.plots import write_plots

        prefix = "" if tables == "results" else f"{tables}_"
        written += write_plots(results, list(methods), root, report_split, prefix)
    print("\n" + (root / f"{tables}.md").read_text().rstrip())
    print("wrote " + ", ".join(str(p) for p in written))
    return results
