"""Ablation of KL self-distillation on the synthetic default world (issue: make the fix work).

    python tools/distill_study.py --seeds 0 --out runs/distill_study            # screening
    python tools/distill_study.py --seeds 0 1 2 --only sft paper_answer_l0.3 \
        paper_answer_l0.2+extra_q64_l10 --out runs/distill_study \
        --plot docs/img/distill_vs_sft.png                                        # finalists

Every variant is ``configs/distill.yaml`` (or ``configs/sft.yaml``) plus the overrides below;
runs already finished in ``--out`` are reused. The table gives, per variant, the held-out
Known decline, its ratio to plain SFT's decline on the same seed, and new-fact accuracy.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from seed_table import mean_std, run

D = "halluc_cl.regularizers.KLSelfDistillation"
R = "--model.regularizers.init_args."


def distill(**kw) -> list[str]:
    return [a for k, v in kw.items() for a in (R + k, str(v))]


EXTRA = ["--data.distill_per_batch"]
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "sft": ("configs/sft.yaml", []),
    # the paper's form: KL on the SFT batch
    "paper_answer_l1": ("configs/distill.yaml", []),
    "paper_answer_l0.1": ("configs/distill.yaml", distill(weight=0.1)),
    "paper_answer_l0.3": ("configs/distill.yaml", distill(weight=0.3)),
    "paper_all_l1": ("configs/distill.yaml", distill(tokens="all")),
    "paper_question_l1": ("configs/distill.yaml", distill(tokens="question")),
    "paper_question_l10": ("configs/distill.yaml", distill(tokens="question", weight=10)),
    "paper_known_all_l1": ("configs/distill.yaml", distill(tokens="all", examples="known")),
    "paper_known_all_l3": ("configs/distill.yaml",
                           distill(tokens="all", examples="known", weight=3)),
    "paper_answer_l0.5": ("configs/distill.yaml", distill(weight=0.5)),
    "paper_answer_l1_ramp5": ("configs/distill.yaml", distill(ramp_epochs=5)),
    "paper_answer_l0.3_jsd": ("configs/distill.yaml", distill(weight=0.3, direction="jsd")),
    "paper_answer_l0.3_reverse": ("configs/distill.yaml",
                                  distill(weight=0.3, direction="reverse")),
    "paper_answer_l0.3_tau1": ("configs/distill.yaml", distill(weight=0.3, temperature=1.0)),
    "paper_answer_l0.3_snapshot_base": ("configs/distill.yaml", distill(weight=0.3)
                                        + ["--model.snapshot", "base"]),
    # extra distillation inputs that carry no new fact
    "extra_q32_l1": ("configs/distill.yaml", EXTRA + ["32"] + distill(weight=0, extra_weight=1)),
    "extra_q64_l1": ("configs/distill.yaml", EXTRA + ["64"] + distill(weight=0, extra_weight=1)),
    "extra_q64_l3": ("configs/distill.yaml", EXTRA + ["64"] + distill(weight=0, extra_weight=3)),
    "extra_q64_l10": ("configs/distill.yaml",
                      EXTRA + ["64"] + distill(weight=0, extra_weight=10)),
    "extra_qa64_l3": ("configs/distill.yaml", EXTRA + ["64", "--data.distill_source", "qa"]
                      + distill(weight=0, extra_weight=3)),
    "extra_stmt64_l3": ("configs/distill.yaml",
                        EXTRA + ["64", "--data.distill_source", "statements"]
                        + distill(weight=0, extra_weight=3)),
    "extra_q64_l3_reverse": ("configs/distill.yaml",
                             EXTRA + ["64"] + distill(weight=0, extra_weight=3,
                                                      direction="reverse")),
    "extra_q64_l3_jsd": ("configs/distill.yaml",
                         EXTRA + ["64"] + distill(weight=0, extra_weight=3, direction="jsd")),
    "extra_q64_l3_tau1": ("configs/distill.yaml",
                          EXTRA + ["64"] + distill(weight=0, extra_weight=3, temperature=1.0)),
    "extra_q64_l3_tau2scaled": ("configs/distill.yaml", EXTRA + ["64"] + distill(
        weight=0, extra_weight=3, scale_by_temperature_squared="true")),
    "extra_q64_l3_snapshot_base": ("configs/distill.yaml", EXTRA + ["64"] + distill(
        weight=0, extra_weight=3) + ["--model.snapshot", "base"]),
    "extra_q64_l3_warmup2": ("configs/distill.yaml", EXTRA + ["64"] + distill(
        weight=0, extra_weight=3) + ["--model.warmup_epochs", "2", "--trainer.max_epochs", "26"]),
    "extra_q64_l3+paper_known_all": ("configs/distill.yaml", EXTRA + ["64"] + distill(
        weight=1, extra_weight=3, tokens="all", examples="known")),
    "paper_answer_l0.3+extra_q64_l10": ("configs/distill.yaml", EXTRA + ["64"] + distill(
        weight=0.3, extra_weight=10)),
    "paper_answer_l0.2+extra_q64_l10": ("configs/distill.yaml", EXTRA + ["64"] + distill(
        weight=0.2, extra_weight=10)),
    "paper_answer_l0.5+extra_q64_l10": ("configs/distill.yaml", EXTRA + ["64"] + distill(
        weight=0.5, extra_weight=10)),
    # model size: the same world under 0.14 M / 0.86 M / 3.3 M-parameter base models
    **{f"{size}_{name}": (cfg, args + ["--model.model", f"synthetic://default-{size}",
                                        "--data.source", f"synthetic://default-{size}"])
       for size in ("small", "large")
       for name, (cfg, args) in {
           "sft": ("configs/sft.yaml", []),
           "paper_answer_l0.3": ("configs/distill.yaml", distill(weight=0.3)),
           "paper_answer_l0.2+extra_q64_l10": ("configs/distill.yaml", EXTRA + ["64"] + distill(
               weight=0.2, extra_weight=10)),
       }.items()},
    # learning rate, for SFT and the extra-input form
    "sft_lr3e-4": ("configs/sft.yaml", ["--model.optimizer.init_args.lr", "3e-4"]),
    "extra_q64_l3_lr3e-4": ("configs/distill.yaml", EXTRA + ["64"] + distill(
        weight=0, extra_weight=3) + ["--model.optimizer.init_args.lr", "3e-4"]),
}


def baseline(name: str) -> str:
    """The plain-SFT variant a variant is compared with (same model size)."""
    size = name.split("_")[0]
    return f"{size}_sft" if size in ("small", "large") else "sft"


def per_epoch(run_dir: Path) -> list[dict]:
    rows = csv.DictReader((run_dir / "metrics.csv").open())
    return [r for r in rows if r.get("heldout_known_acc")]


def plot(out: Path, names: list[str], seed: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, color in zip(names, ["tab:red", "tab:blue", "tab:green", "tab:purple"]):
        rows = per_epoch(out / f"{name}_seed{seed}" / "version_0")
        epochs = [int(r["epoch"]) for r in rows]
        ax.plot(epochs, [float(r["heldout_known_acc"]) for r in rows], color=color,
                label=f"{name}: held-out Known")
        ax.plot(epochs, [float(r["new_fact_acc"]) for r in rows], color=color, ls="--",
                label=f"{name}: new facts")
    ax.set_xlabel("epoch (0 = end of warm-up)")
    ax.set_ylabel("greedy exact match")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="center right")
    ax.set_title(f"synthetic default world, seed {seed}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--only", nargs="*", help="variant names (default: all)")
    parser.add_argument("--out", default="runs/distill_study")
    parser.add_argument("--plot", help="PNG path: per-epoch curves of the --only variants "
                        "(at most 4), first seed")
    args = parser.parse_args()
    out, root = Path(args.out), Path(__file__).resolve().parents[1]
    names = args.only or list(VARIANTS)
    baselines = {baseline(n) for n in names}
    results = {n: [run(str(root / VARIANTS[n][0]), s, out, VARIANTS[n][1], name=n)
                   for s in args.seeds] for n in [*sorted(baselines), *names]}

    header = "| variant | held-out decline | ratio to SFT | new-fact acc | ratio to SFT | wall s |"
    lines = [header, "|---|---|---|---|---|---|"]
    for name, runs in results.items():
        sft = results[baseline(name)]
        dec = [r["heldout_known_decline"] for r in runs]
        new = [r["final"].get("new_fact_acc", 0.0) for r in runs]
        ratio = [d / s["heldout_known_decline"] for d, s in zip(dec, sft)]
        new_ratio = [n / s["final"]["new_fact_acc"] for n, s in zip(new, sft)]
        wall = [r["wall_time_s"] for r in runs]
        lines.append(f"| {name} | {mean_std(dec)} | {mean_std(ratio)} | {mean_std(new)} | {mean_std(new_ratio)} | "
                     f"{statistics.mean(wall):.0f} |")
    table = "\n".join(lines)
    print(f"\nseeds {args.seeds}\n{table}")
    (out / f"table_seeds{'-'.join(map(str, args.seeds))}.md").write_text(table + "\n")
    if args.plot:
        plot(out, names[:4], args.seeds[0], Path(args.plot))


if __name__ == "__main__":
    main()
