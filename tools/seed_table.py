"""Run configs over several seeds and print a mean ± std table (markdown) of the summaries.

    python tools/seed_table.py --configs configs/sft.yaml configs/distill.yaml \
        configs/sft.yaml+configs/known_only.yaml --seeds 0 1 2 --out runs/seed_table

A ``+`` joins configs that are given together (``--config a --config b``).

Each seed sets both ``seed_everything`` and ``data.split_seed`` (which facts are held out, and
the data order). Finished runs (a summary.json in their folder) are reused.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from halluc_cl.cli import main as halluc_main
from halluc_cl.experiments.tables import mean_std

COLUMNS = [("heldout_known_acc", "peak"), ("heldout_known_acc", "final"),
           ("heldout_known_decline", None), ("hallucination_rate", "final"),
           ("new_fact_acc", "final"), ("wall_time_s", None)]


def run(config: str, seed: int, out: Path, extra: list[str], name: str | None = None) -> dict:
    """Fit ``config`` (``+``-joined configs) with ``seed`` unless its summary exists."""
    name = (name or "+".join(Path(c).stem for c in config.split("+"))) + f"_seed{seed}"
    summary = out / name / "version_0" / "summary.json"
    if not summary.is_file():
        configs = [a for c in config.split("+") for a in ("--config", c)]
        halluc_main(["fit", *configs, "--seed_everything", str(seed),
                     "--data.split_seed", str(seed), "--trainer.logger.init_args.save_dir",
                     str(out), "--trainer.logger.init_args.name", name,
                     "--trainer.logger.init_args.version", "0", *extra])
    return json.loads(summary.read_text())


def value(summary: dict, key: str, where: str | None) -> float | None:
    return summary[where].get(key) if where else summary.get(key)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="runs/seed_table")
    parser.add_argument("extra", nargs="*", help="extra arguments for halluc-cl fit (after --)")
    args = parser.parse_args()
    out = Path(args.out)
    header = ["config"] + [f"{w} {k}" if w else k for k, w in COLUMNS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for config in args.configs:
        runs = [run(config, s, out, args.extra) for s in args.seeds]
        cells = []
        for key, where in COLUMNS:
            vals = [v for v in (value(r, key, where) for r in runs) if v is not None]
            if not vals:
                cells.append("–")
                continue
            cells.append(mean_std(vals))
        label = " + ".join(Path(c).name for c in config.split("+"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(f"\nseeds {args.seeds}\n{table}")
    (out / "table.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
