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
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout
from tqdm.auto import tqdm

from halluc_cl.errors import ConfigError, TrainingError
from halluc_cl.experiments.fit import run_verb
from halluc_cl.experiments.grid import (
    METHOD_NAME,
    Cell,
    grid,
    pinned_fraction,
    resolve_methods,
    validate,
)
from halluc_cl.experiments.tables import CellResult, Split, results_csv, results_markdown
from halluc_cl.io import atomic_write_text
from halluc_cl.runtime.signals import CHILD_ENV, GUARD, Interrupted


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


# what a launcher sets for the processes it starts: a cell's fit that inherited them (from a
# launcher that ran in this process before) would take itself for one launched rank and
# wait for the others instead of starting them
LAUNCHED = ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE",
            "MASTER_ADDR", "MASTER_PORT")


def fit_in_subprocess(args: list[str], name: str) -> None:
    """``halluc-cl <args>`` as a child process, for a cell of several processes: Lightning
    starts a fit's other processes by running the command line again, which must be the fit,
    not the whole grid. A signal to the grid is passed on to the fit, which stops at its next
    safe point with a checkpoint (``train/interrupt.py``)."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHED}
    proc = subprocess.Popen([sys.executable, "-m", "halluc_cl.cli", *args],
                            env={**env, CHILD_ENV: "1"})
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
    if not METHOD_NAME.match(tables):
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
        list_cells(mine, root)
        return []
    busy = run_cells(mine, cells, root, fit_args, keep_checkpoints)
    unfinished = [c for c in cells if not is_done(c, root)]
    if unfinished:
        print(f"{len(cells) - len(unfinished)} of {len(cells)} cells finished ({len(busy)} being "
              "fitted by another command); the tables are written when every cell is: run "
              "this command again (without --shard) once the others are done")
        return []
    results = [CellResult(c.method, c.unknown_fraction, c.seed, str(c.run_dir(root)),
                          json.loads((c.run_dir(root) / "summary.json").read_text()), c.data_seed)
               for c in cells]
    write_tables(results, list(methods), root, tables,
                 TableOptions(report_split, cost_reference, tuple(paired_with), plots))
    return results


def list_cells(cells: list[Cell], root: Path) -> None:
    """Print every cell with its hash and state (``dry_run``)."""
    for c in cells:
        state = "done" if is_done(c, root) else "resume" if resumable(c, root) else "to run"
        print(f"{c.sha256[:16]}  {state:<7} {c.name}  {' '.join(c.args())}")
    print(f"{len(cells)} cells, {sum(is_done(c, root) for c in cells)} done")


def run_cells(mine: list[Cell], cells: list[Cell], root: Path, fit_args: list[str],
              keep_checkpoints: bool) -> list[Cell]:
    """Fit every unfinished cell of ``mine`` that no other command is fitting; the cells left
    to another command. A signal stops the grid after the running cell's checkpoint, with how
    many of ``cells`` (the whole grid) are finished."""
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
    return busy


@dataclass(frozen=True)
class TableOptions:
    """How a grid's tables are made (``compare``'s arguments of the same names)."""

    report_split: Split
    cost_reference: str
    paired_with: tuple[str, ...]
    plots: bool


def write_tables(results: list[CellResult], methods: list[str], root: Path, tables: str,
                 options: TableOptions) -> list[Path]:
    """``<tables>.csv``, ``<tables>.md`` (with the commits that made the cells) and the plots
    into ``root``; prints the table and the files written."""
    commits = sorted({str(r.summary.get("git_commit")) for r in results})
    provenance = f"Made by `halluc-cl compare` into `{root}` at commit {', '.join(commits)}."
    split, reference = options.report_split, options.cost_reference
    atomic_write_text(root / f"{tables}.csv", results_csv(results, split, reference))
    atomic_write_text(root / f"{tables}.md", results_markdown(
        results, methods, split, reference, provenance, options.paired_with))
    written = [root / f"{tables}.csv", root / f"{tables}.md"]
    if options.plots:
        from halluc_cl.experiments.plots import write_plots

        prefix = "" if tables == "results" else f"{tables}_"
        written += write_plots(results, methods, root, split, prefix)
    print("\n" + (root / f"{tables}.md").read_text().rstrip())
    print("wrote " + ", ".join(str(p) for p in written))
    return written
