"""Re-score a grid's final models by greedy generation, beside the one-forward scores they
were reported with (a results table must say how it was scored, and whether the two scorings
agree on its models).

    halluc-cl analyze rescore --grid runs/compare/paper --methods '[sft, distill]'

For every cell of the grid's table (``results.csv``, or ``--tables``) of the chosen methods, ``halluc-cl validate`` runs from the cell's
``checkpoints/last.ckpt`` and ``config.yaml`` with ``--model.eval_method generate`` (run
folders under ``<grid>/rescore/``). Per cell it compares the final evaluation's predictions
fact by fact: exact match under ``forward`` (as the fit scored it) and under ``generate``.
Writes ``<grid>/rescore.csv`` and ``<grid>/rescore.md``: per method the held-out test
accuracy and hallucination rate both ways and the share of facts on which they agree.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path

import torch

from halluc_cl.errors import ConfigError
from halluc_cl.experiments.fit import run_verb
from halluc_cl.experiments.tables import mean_std
from halluc_cl.io import atomic_write_text
from halluc_cl.metrics.hallucination import HallucinationRate

SPLITS = ("heldout_test", "heldout_val", "unknown_train")


def _final_predictions(run: Path, epoch: int) -> dict[str, dict]:
    path = run / "predictions" / f"epoch_{epoch}.jsonl"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: rescoring needs the cell's saved predictions")
    return {f'{p["split"]}:{p["id"]}': p for p in map(json.loads, path.read_text().splitlines())}


def _rates(preds: dict[str, dict], reference: dict[str, bool]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for split in SPLITS:
        rows = [p for k, p in preds.items() if k.startswith(split + ":")]
        out[f"{split}_acc"] = statistics.mean(p["correct"] for p in rows) if rows else None
    test = [p for k, p in preds.items() if k.startswith("heldout_test:")]
    rate = HallucinationRate()
    if test:
        rate.update(torch.tensor([reference.get(p["id"], False) for p in test]),
                    torch.tensor([p["correct"] for p in test]),
                    torch.tensor([p["abstained"] for p in test]))
    value = float(rate.compute()) if test else math.nan
    out["hallucination_rate"] = None if math.isnan(value) else value
    return out


def rescore_cell(run: Path, out: Path) -> dict:
    """Validate one cell's last checkpoint by generation; both scorings and their agreement."""
    summary = json.loads((run / "summary.json").read_text())
    ckpt = run / "checkpoints" / "last.ckpt"
    if not ckpt.is_file():
        raise ConfigError(f"{ckpt} does not exist: rescoring needs the cell's last checkpoint")
    last_epoch = summary["history"][-1]["epoch"]
    forward = _final_predictions(run, last_epoch)
    dest = out / run.parent.name
    if not (dest / run.name / "predictions").is_dir():
        run_verb(["validate", "--config", str(run / "config.yaml"), "--ckpt_path", str(ckpt),
                  "--model.eval_method", "generate", "--trainer.enable_progress_bar", "false",
                  "--artifacts.root", str(out), "--artifacts.name", run.parent.name,
                  "--artifacts.version", run.name,
                  "--artifacts.overwrite", "true"])
    (generated_file,) = sorted((dest / run.name / "predictions").glob("epoch_*.jsonl"))
    generated = {f'{p["split"]}:{p["id"]}': p
                 for p in map(json.loads, generated_file.read_text().splitlines())}
    warmup = summary["warmup_epochs"] - 1
    reference = {p["id"]: p["correct"] for p in _final_predictions(run, warmup).values()
                 if p["split"] == "heldout_test"}
    keys = [k for k in forward if k.split(":")[0] in SPLITS and k in generated]
    agree = [forward[k]["correct"] == generated[k]["correct"] for k in keys]
    row = {"method": run.parent.name, "run": run.name}
    for name, preds in (("forward", forward), ("generate", generated)):
        row.update({f"{k}_{name}": v for k, v in _rates(preds, reference).items()})
    row["agreement"] = statistics.mean(agree) if agree else None
    row["facts"] = len(keys)
    return row


def rescore(grid: str, methods: list[str] | None = None, tables: str = "results") -> list[dict]:
    """Re-score the cells of one table of a compare grid by generation (module docstring).

    Args:
        grid: The compare output folder (``out`` of its config).
        methods: Methods to re-score (``None``: every method of the table).
        tables: The table whose cells are re-scored (``<grid>/<tables>.csv``): grids that
            share a folder keep their cells side by side, and only this table's count.
    """
    root = Path(grid)
    table = root / f"{tables}.csv"
    if not table.is_file():
        raise ConfigError(f"{table} does not exist; run the grid's compare first")
    with table.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    runs = [Path(r["run_dir"]) for r in rows if methods is None or r["method"] in methods]
    runs = [r if r.is_absolute() or r.exists() else root / "runs" / r.parent.name / r.name
            for r in runs]
    if not runs:
        raise ConfigError(f"no cells in {table}" + (f" for methods {methods}" if methods else ""))
    rows = [rescore_cell(run, root / "rescore") for run in runs]
    fields = list(rows[0])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(root / "rescore.csv", buf.getvalue())
    order = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["# Forward vs generate scoring of the final models", "",
             ("Mean ± std over cells. Agreement: share of evaluated facts (held-out test and "
              "val, new facts) whose exact match is the same under both."), "",
             ("| method | cells | held-out test acc (forward) | (generate) | hallucination rate "
              "(forward) | (generate) | new-fact acc (forward) | (generate) | agreement |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for method in order:
        mine = [r for r in rows if r["method"] == method]
        cols = ["heldout_test_acc_forward", "heldout_test_acc_generate",
                "hallucination_rate_forward", "hallucination_rate_generate",
                "unknown_train_acc_forward", "unknown_train_acc_generate", "agreement"]
        lines.append(f"| {method} | {len(mine)} | "
                     + " | ".join(mean_std([r[c] for r in mine]) for c in cols) + " |")
    atomic_write_text(root / "rescore.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows
