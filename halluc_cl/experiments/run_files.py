"""What a fit leaves in its run folder (DESIGN §7): per-epoch predictions, ``summary.json``,
the final student as a plain HF model folder, and a closing table on stdout."""

from __future__ import annotations

import copy
import csv
import json
import os
import shutil
import subprocess
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import lightning as L

from halluc_cl.cache import share_modes, swap_in
from halluc_cl.data.schema import atomic_write_text, writing
from halluc_cl.models.zero import full_state_dict, is_partitioned

SUMMARY_KEYS = ("heldout_test_acc", "heldout_val_acc", "new_fact_acc", "known_train_acc",
                "hallucination_rate", "abstain_rate", "val_hallucination_rate",
                "val_abstain_rate", "new_fact_abstain_rate", "heldout_drift")
SCHEMA_VERSION = 2  # 2: validation/test held-out splits, protocol, cost, config hash


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("halluc-cl", "torch", "lightning", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def run_dir(trainer: L.Trainer) -> Path:
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
    cost = module.run_cost() if hasattr(module, "run_cost") else module.cost
    student, teacher = (int(cost[k]) for k in ("student_tokens", "teacher_tokens"))
    return {"student_tokens": student, "teacher_tokens": teacher,
            "train_token_passes": 3 * student + teacher}


def build_summary(module, wall_time_s: float, protocol: dict | None = None,
                  cost: dict | None = None) -> dict:
    """Final and peak metrics, decline, cost (``run_cost`` unless given), protocol and
    provenance of a finished fit."""
    history = module.history
    final = {k: history[-1][k] for k in SUMMARY_KEYS if history and k in history[-1]}
    last = history[-1] if history else {}
    sft = [h for h in history if h["epoch"] >= module.warmup_epochs - 1]
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
        "cost": cost if cost is not None else run_cost(module),
        "protocol": protocol or {},
        "warmup_end": next((h for h in history if h["epoch"] == module.warmup_epochs - 1), None),
        "epochs": len(history),
        "history": history,
        "warmup_epochs": module.warmup_epochs,
        "model": module.model_spec,
        "regularizers": [type(r).__name__ for r in module.regularizers],
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
    with writing(dest):
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
        try:
            model.save_pretrained(tmp, **({} if state_dict is None else {"state_dict": state_dict}))
            tokenizer.save_pretrained(tmp)
            share_modes(tmp)
            swap_in(tmp, dest)  # --artifacts.overwrite: the old folder goes after the swap
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def format_table(summary: dict) -> str:
    """A short plain-text table of final and peak metrics."""
    lines = [f"{'metric':<22}{'final':>8}{'peak':>8}"]
    for key in SUMMARY_KEYS:
        if key in summary["final"]:
            peak = summary["peak"].get(key)
            peak_s = f"{peak:>8.3f}" if peak is not None else f"{'-':>8}"
            lines.append(f"{key:<22}{summary['final'][key]:>8.3f}{peak_s}")
    for key in ("heldout_test_decline", "heldout_val_decline"):
        if summary.get(key) is not None:
            lines.append(f"{key:<22}{summary[key]:>8.3f}")
    return "\n".join(lines)


class RunArtifacts(L.Callback):
    """Writes the run's result files.

    Args:
        save_predictions: Write ``predictions/epoch_K.jsonl`` after every evaluation.
        save_model: Save the final student with ``save_pretrained`` + tokenizer in ``model/``.
        overwrite: Write into a run folder that already holds a finished run's
            ``summary.json`` (otherwise the CLI refuses before writing anything).
    """

    def __init__(self, save_predictions: bool = True, save_model: bool = True,
                 overwrite: bool = False) -> None:
        self.save_predictions, self.save_model = save_predictions, save_model
        self.overwrite = overwrite
        self._t0 = 0.0
        self._earlier_rows: list[dict] = []
        self.config_hash: str | None = None  # set by the CLI from the resolved config
        self.run = Path(".")  # the run folder, read in ``setup``

    def keep_metrics_of(self, path: Path) -> None:
        """Keep the rows of an interrupted run's ``metrics.csv`` (the CSV logger starts the
        file afresh when a fit resumes in its folder); ``on_train_start`` puts back those
        logged before the checkpoint's step, ahead of the resumed fit's rows."""
        with Path(path).open(newline="", encoding="utf-8") as fh:
            self._earlier_rows = [{k: v for k, v in row.items() if k and v not in ("", None)}
                                  for row in csv.DictReader(fh)]

    def on_train_start(self, trainer, pl_module) -> None:
        rows, self._earlier_rows = self._earlier_rows, []
        writer = getattr(trainer.logger, "experiment", None) if trainer.is_global_zero else None
        if rows and isinstance(getattr(writer, "metrics", None), list):
            before = [r for r in rows if "step" in r and int(float(r["step"])) < trainer.global_step]
            writer.metrics[:0] = before

    def setup(self, trainer, pl_module, stage: str) -> None:
        # ``trainer.log_dir`` is a broadcast under DDP: read it here, on every rank, and never
        # from a hook that only rank 0 runs (that hung two-process fits at the first epoch end)
        self.run = run_dir(trainer)
        # one-forward evaluation generates wrong answers' text only for saved predictions
        if hasattr(pl_module, "want_prediction_text"):
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
        if self.save_model and is_partitioned(pl_module.student):
            state = full_state_dict(pl_module.student)  # ZeRO-3: a collective, on every rank
        cost = run_cost(pl_module)  # summed over processes: a collective, on every rank
        if not trainer.is_global_zero or not pl_module.history:
            return
        out = self.run
        data = trainer.datamodule
        protocol = {**(data.protocol() if hasattr(data, "protocol") else {}),
                    "seed": int(os.environ.get("PL_GLOBAL_SEED", "-1")),
                    "processes": trainer.world_size, "config_hash": self.config_hash}
        summary = build_summary(pl_module, time.perf_counter() - self._t0, protocol, cost)
        if self.save_model:
            student = pl_module.student
            if state is None and hasattr(student, "merge_and_unload"):  # LoRA: a plain merged model
                student = copy.deepcopy(student).merge_and_unload()
            save_model_folder(student, pl_module.tokenizer, out / "model", state)
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        print(f"\n{format_table(summary)}\nrun folder: {out}")
