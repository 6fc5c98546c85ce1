"""What a fit leaves in its run folder (docs/metrics.md, "summary.json"): per-epoch predictions,
``summary.json``, the final student as a plain HF model folder, and a closing table on stdout.

The run folder is ``<root>/<name>/<version>/`` (``RunArtifacts``), whatever the loggers: it
holds ``config.yaml``, ``metrics.csv``, ``summary.json``, ``predictions/``, ``checkpoints/``
and ``model/``. Unset parts follow the first CSV or TensorBoard logger (so the default
``CSVLogger(save_dir="runs", name=...)`` keeps its ``runs/<name>/version_N`` layout), else
``runs``, ``fit`` and the next free ``version_N``.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from peft import PeftModel

from halluc_cl.io import atomic_folder, atomic_write_text, writing
from halluc_cl.lm.zero import full_state_dict, is_partitioned
from halluc_cl.metrics.split_metrics import HELDOUT, SPLITS
from halluc_cl.runtime.fsdp import is_fsdp, student_state_dict

SUMMARY_KEYS = ("heldout_test_acc", "heldout_val_acc", "new_fact_acc", "known_train_acc",
                "hallucination_rate", "abstain_rate", "val_hallucination_rate",
                "val_abstain_rate", "new_fact_abstain_rate", "heldout_drift", "format_rate",
                "val_format_rate")
# 2: validation/test held-out splits, protocol, cost, config hash; 3: format rates;
# 4: losses measured from the snapshot (``snapshot``); 5: ``methods`` (was ``regularizers``)
SCHEMA_VERSION = 5
SNAPSHOT_MEASURES = ("snapshot_loss", "snapshot_loss_rel", "forgotten", "forgotten_rate",
                     "gained", "gained_rate", "lasting_loss", "lasting_loss_rel")


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("halluc-cl", "torch", "lightning", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


DEFAULT_ROOT, DEFAULT_NAME = "runs", "fit"  # the run folder's parts without a folder logger
FOLDER_LOGGERS = (CSVLogger, TensorBoardLogger)  # loggers writing into <save_dir>/<name>/<version>


def version_name(version: int | str) -> str:
    """A run version as a folder name: ``3`` -> ``version_3``; a string is kept (as Lightning's
    CSV and TensorBoard loggers do)."""
    return version if isinstance(version, str) else f"version_{version}"


def next_version(root: Path) -> int:
    """The next free ``N`` of the ``version_N`` folders in ``root`` (0 if there is none)."""
    try:
        found = [int(d.name[len("version_"):]) for d in root.iterdir()
                 if d.is_dir() and d.name.startswith("version_")
                 and d.name[len("version_"):].isdigit()]
    except OSError:  # no folder (yet), or not a folder: the CLI reports it when creating it
        return 0
    return max(found) + 1 if found else 0


def artifacts_of(trainer: L.Trainer) -> RunArtifacts | None:
    """The trainer's ``RunArtifacts`` callback, if it has one."""
    return next((c for c in trainer.callbacks if isinstance(c, RunArtifacts)), None)


def run_dir(trainer: L.Trainer) -> Path:
    """The run folder: the one ``RunArtifacts`` shared at setup (or, before it, the one this
    process chose), else the logger's folder."""
    artifacts = artifacts_of(trainer)
    if artifacts is not None and artifacts.folder is not None:
        return artifacts.folder
    return Path(trainer.log_dir or trainer.default_root_dir)


def git_commit() -> str | None:
    """The commit of the checkout the package runs from (``None`` outside a git checkout)."""
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--",
                                "halluc_cl"], capture_output=True, text=True, timeout=10,
                               check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out + ("+dirty" if dirty.strip() else "")


def run_cost(module) -> dict:
    """Tokens through the student (forward + backward) and the teacher (forward only) on
    every process, and ``train_token_passes`` = 3 · student + teacher (a backward costs
    about two forwards). A collective under several processes: every rank calls it."""
    cost = module.run_cost()
    student, teacher = (int(cost[k]) for k in ("student_tokens", "teacher_tokens"))
    return {"student_tokens": student, "teacher_tokens": teacher,
            "train_token_passes": 3 * student + teacher}


def snapshot_block(module) -> dict:
    """``summary.json``'s ``snapshot``: per split, the losses measured from the evaluation at
    the warm-up's end (``metrics/snapshot.py``), final and lasting; for the held-out splits
    also the ids of the facts right at the snapshot, split into ``kept_ids`` and
    ``forgotten_ids`` by the final evaluation (what a paired McNemar test reads)."""
    history = module.history
    warmup = next((h for h in history if h["epoch"] == module.warmup_end_epoch), {})
    last = history[-1] if history and history[-1]["epoch"] > module.warmup_end_epoch else {}
    final = {p["id"]: (p["split"], p["correct"]) for p in module.last_predictions}
    block: dict = {"window": module.lasting_window}
    for split, names in SPLITS.items():
        stem = names.stem
        if f"{stem}_snapshot_loss" not in last:
            continue
        entry = {"acc": warmup[f"{stem}_acc"]}
        entry.update({k: last[f"{stem}_{k}"] for k in SNAPSHOT_MEASURES
                      if f"{stem}_{k}" in last})
        if split in HELDOUT:
            right = sorted(i for i, (where, _) in final.items()
                           if where == split and module.reference.get(i))
            entry["kept_ids"] = [i for i in right if final[i][1]]
            entry["forgotten_ids"] = [i for i in right if not final[i][1]]
        block[split] = entry
    return block


def build_summary(module, wall_time_s: float, protocol: dict | None = None,
                  cost: dict | None = None) -> dict:
    """Final and peak metrics, decline, cost (``run_cost`` unless given), protocol and
    provenance of a finished fit."""
    history = module.history
    final = {k: history[-1][k] for k in SUMMARY_KEYS if history and k in history[-1]}
    last = history[-1] if history else {}
    sft = [h for h in history if h["epoch"] >= module.warmup_end_epoch]
    # held-out peaks as the evaluation hooks define them (the test one at the val peak)
    peak = {f"heldout_{s}_acc": last[f"heldout_{s}_peak"] for s in ("test", "val")
            if f"heldout_{s}_peak" in last}
    peak.update({k: max(h[k] for h in sft if k in h) for k in ("new_fact_acc", "known_train_acc")
                 if any(k in h for h in sft)})
    return {
        "schema_version": SCHEMA_VERSION,
        "final": final,
        "peak": peak,
        "heldout_test_decline": last.get("heldout_test_decline"),
        "heldout_val_decline": last.get("heldout_val_decline"),
        "snapshot": snapshot_block(module),
        "cost": cost if cost is not None else run_cost(module),
        "protocol": protocol or {},
        "warmup_end": next((h for h in history if h["epoch"] == module.warmup_end_epoch), None),
        "epochs": len(history),
        "history": history,
        "warmup_epochs": module.warmup_epochs,
        "model": module.model_spec,
        "methods": [type(r).__name__ for r in module.methods],
        "seed": int(os.environ.get("PL_GLOBAL_SEED", "-1")),
        "wall_time_s": round(wall_time_s, 2),
        "versions": _versions(),
        "git_commit": git_commit(),
    }


def save_model_folder(model, tokenizer, dest: Path, state_dict: dict | None = None) -> None:
    """``save_pretrained`` of model (with ``state_dict`` if given) and tokenizer into a
    temporary folder beside ``dest``, renamed into place: a killed save leaves no
    half-written ``dest``.

    Raises:
        WriteError: the save failed (a full disk, say); ``dest`` is as it was and the
            temporary folder is removed.
    """
    with writing(dest), atomic_folder(dest) as tmp:  # --artifacts.overwrite: old goes last
        model.save_pretrained(tmp, **({} if state_dict is None else {"state_dict": state_dict}))
        tokenizer.save_pretrained(tmp)


def format_table(summary: dict) -> str:
    """A short plain-text table of final and peak metrics, then the held-out losses from the
    snapshot (final and lasting) and the peak declines."""
    lines = [f"{'metric':<28}{'final':>8}{'peak':>8}"]
    for key in SUMMARY_KEYS:
        if key in summary["final"]:
            peak = summary["peak"].get(key)
            peak_s = f"{peak:>8.3f}" if peak is not None else f"{'-':>8}"
            lines.append(f"{key:<28}{summary['final'][key]:>8.3f}{peak_s}")
    for split in HELDOUT:
        block = summary.get("snapshot", {}).get(split, {})
        for key in ("snapshot_loss", "lasting_loss", "forgotten_rate"):
            if key in block:
                lines.append(f"{split + '_' + key:<28}{block[key]:>8.3f}")
    for key in ("heldout_test_decline", "heldout_val_decline"):
        if summary.get(key) is not None:
            lines.append(f"{key:<28}{summary[key]:>8.3f}")
    return "\n".join(lines)


class RunArtifacts(L.Callback):
    """Writes the run's result files into the run folder ``<root>/<name>/<version>/``.

    The folder does not depend on the logger: besides ``summary.json``, ``predictions/`` and
    ``model/``, the run's ``ModelCheckpoint`` callbacks save into its ``checkpoints/`` (unless
    given a ``dirpath``), the CLI saves ``config.yaml`` there, and a ``CSVLogger`` writes
    ``metrics.csv`` there: the user's own when it logs into the folder, otherwise one added
    beside the user's loggers (TensorBoard, W&B, ``logger: false``, ...). Rank 0 chooses the
    folder once; ``setup`` shares it with every process.

    Args:
        root: Folder of all runs (``None``: the first CSV or TensorBoard logger's
            ``save_dir``, else ``runs``).
        name: Folder of this kind of run in ``root`` (``None``: that logger's ``name``, else
            ``fit``).
        version: The run's folder in ``root/name``: an int ``N`` is ``version_N``, a string is
            used as it is (``None``: that logger's version if it logs under ``root/name``,
            else the next free ``version_N``).
        save_predictions: Write ``predictions/epoch_K.jsonl`` after every evaluation.
        save_model: Save the final student with ``save_pretrained`` + tokenizer in ``model/``.
        overwrite: Write into a run folder that already holds a finished run's
            ``summary.json`` (otherwise the CLI refuses before writing anything).
    """

    def __init__(self, root: str | None = None, name: str | None = None,
                 version: int | str | None = None, save_predictions: bool = True,
                 save_model: bool = True, overwrite: bool = False) -> None:
        self.root, self.name, self.version = root, name, version
        self.save_predictions, self.save_model = save_predictions, save_model
        self.overwrite = overwrite
        self._t0 = 0.0
        self._earlier_rows: list[dict] = []
        self.config_hash: str | None = None  # set by the CLI from the resolved config
        self._chosen: Path | None = None  # this process's choice (``run_folder``)
        self.run: Path | None = None  # the run folder every rank shares, set in ``setup``
        self.metrics_logger: CSVLogger | None = None  # the CSV logger writing metrics.csv

    @property
    def folder(self) -> Path | None:
        """The run folder known so far: the shared one after ``setup``, this process's choice
        before it, ``None`` before either."""
        return self.run or self._chosen

    def run_folder(self, trainer: L.Trainer) -> Path:
        """The run folder as this process chooses it, the first time it is asked (later calls
        return the same folder, even once it exists). Only rank 0's choice counts: ``setup``
        shares it with the other processes."""
        if self._chosen is None:
            logger = next((lg for lg in trainer.loggers if isinstance(lg, FOLDER_LOGGERS)), None)
            root = Path(self.root if self.root is not None else
                        logger.save_dir if logger is not None else DEFAULT_ROOT)
            name = self.name if self.name is not None else \
                logger.name if logger is not None else DEFAULT_NAME
            version = self.version
            if version is None and logger is not None and Path(logger.root_dir) == root / name:
                version = logger.version  # where its files go: next free version_N by default
            if version is None:
                version = next_version(root / name)
            self._chosen = root / name / version_name(version)
        return self._chosen

    def _logs_metrics_here(self, logger, run: Path) -> bool:
        return isinstance(logger, CSVLogger) and Path(logger.log_dir) == run

    def share_run(self, trainer: L.Trainer) -> Path:
        """The run folder, the same on every process (a broadcast of rank 0's choice: call it
        on every rank, as ``setup`` does); adds a CSV logger for ``metrics.csv`` when none of
        the trainer's loggers writes into the folder."""
        chosen = None
        if trainer.is_global_zero:
            run = self.run_folder(trainer)
            chosen = (str(run), any(self._logs_metrics_here(lg, run) for lg in trainer.loggers))
        run, has_csv = trainer.strategy.broadcast(chosen)
        self.run = self._chosen = Path(run)
        if not has_csv:  # metrics.csv in the run folder whatever the user's loggers
            trainer.loggers = [*trainer.loggers,
                               CSVLogger(save_dir=self.run.parent, name="", version=self.run.name)]
        return self.run

    def point_checkpoints(self, trainer: L.Trainer, run: Path) -> None:
        """Save the ``ModelCheckpoint`` callbacks without a ``dirpath`` in ``run/checkpoints``."""
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(run / "checkpoints")

    def keep_metrics_of(self, path: Path) -> None:
        """Keep the rows of an interrupted run's ``metrics.csv`` (the CSV logger starts the
        file afresh when a fit resumes in its folder); ``on_train_start`` puts back those
        logged before the checkpoint's step, ahead of the resumed fit's rows."""
        with Path(path).open(newline="", encoding="utf-8") as fh:
            self._earlier_rows = [{k: v for k, v in row.items() if k and v not in ("", None)}
                                  for row in csv.DictReader(fh)]

    def on_train_start(self, trainer, pl_module) -> None:
        rows, self._earlier_rows = self._earlier_rows, []
        logger = self.metrics_logger
        if not rows or logger is None or not trainer.is_global_zero:
            return
        for row in rows:  # logged again, ahead of the resumed fit's rows, as they were
            step = int(float(row["step"])) if "step" in row else None
            if step is not None and step < trainer.global_step:
                logger.log_metrics({k: _number(v) for k, v in row.items() if k != "step"}, step)

    def setup(self, trainer, pl_module, stage: str) -> None:
        # a broadcast: here, on every rank, and never from a hook that only rank 0 runs (that
        # hung two-process fits at the first epoch end)
        run = self.share_run(trainer)
        self.point_checkpoints(trainer, run)
        if trainer.is_global_zero:  # the CSV logger writing metrics.csv (rank 0 writes it)
            self.metrics_logger = next((lg for lg in trainer.loggers
                                        if self._logs_metrics_here(lg, run)), None)
            with warnings.catch_warnings():  # the folder may hold TensorBoard's files already
                warnings.filterwarnings("ignore", message=".*exists and is not empty")
                _ = self.metrics_logger.experiment
        # one-forward evaluation generates wrong answers' text only for saved predictions
        pl_module.want_prediction_text = self.save_predictions

    def on_fit_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self.save_predictions or not trainer.is_global_zero:
            return
        rows = "".join(json.dumps(p) + "\n" for p in pl_module.last_predictions)
        epoch = trainer.current_epoch
        atomic_write_text(self.run / "predictions" / f"epoch_{epoch}.jsonl", rows)

    def on_fit_end(self, trainer, pl_module) -> None:
        state = None
        if self.save_model and is_fsdp(trainer):
            state = student_state_dict(trainer)  # FSDP: a collective, on every rank
        elif self.save_model and is_partitioned(pl_module.student):
            state = full_state_dict(pl_module.student)  # ZeRO-3: a collective, on every rank
        cost = run_cost(pl_module)  # summed over processes: a collective, on every rank
        if not trainer.is_global_zero or not pl_module.history:
            return
        out = self.run
        data = pl_module.data  # the data module the module was connected to
        protocol = {**(data.protocol() if data is not None else {}),
                    "seed": int(os.environ.get("PL_GLOBAL_SEED", "-1")),
                    "processes": trainer.world_size, "config_hash": self.config_hash}
        summary = build_summary(pl_module, time.perf_counter() - self._t0, protocol, cost)
        if self.save_model:
            student = pl_module.student
            if state is None and isinstance(student, PeftModel):  # LoRA: a plain merged model
                student = copy.deepcopy(student).merge_and_unload()
            save_model_folder(student, pl_module.tokenizer, out / "model", state)
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        print(f"\n{format_table(summary)}\nrun folder: {out}")


class SaveRunConfig(SaveConfigCallback):
    """Saves the command's resolved config as ``config.yaml`` in the run folder of
    ``RunArtifacts`` (atomically), not in the first logger's folder."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        artifacts = artifacts_of(trainer)
        if artifacts is None:
            super().setup(trainer, pl_module, stage)
            return
        if self.already_saved:
            return
        # RunArtifacts.setup ran first (callbacks keep their order), so the folder is shared
        run = artifacts.run if artifacts.run is not None else artifacts.share_run(trainer)
        if trainer.is_global_zero:
            text = self.parser.dump(self.config, skip_none=False)
            atomic_write_text(run / self.config_filename, text)
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)


def _number(text: str) -> int | float:
    """A metrics.csv value as it was logged: ``3`` stays an int, ``0.75`` a float."""
    try:
        return int(text)
    except ValueError:
        return float(text)
