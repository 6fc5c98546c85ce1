"""``halluc-cl analyze rescore``: a tiny grid's final models scored by generation."""

import csv
import json
from pathlib import Path

from halluc_cl.cli import main
from halluc_cl.experiments.compare import compare

ROOT = Path(__file__).resolve().parents[2]


def test_rescore_by_generation_agrees_with_forward_scores(tmp_path, tiny_model_dir, one_thread):
    methods = {"sft": [str(ROOT / "configs/sft.yaml"), str(ROOT / "configs/world/tiny.yaml")]}
    compare(methods, seeds=[0], out=str(tmp_path / "grid"), plots=False)
    main(["analyze", "rescore", "--grid", str(tmp_path / "grid")])
    rows = list(csv.DictReader((tmp_path / "grid/rescore.csv").open()))
    assert len(rows) == 1 and rows[0]["method"] == "sft"
    (summary_path,) = (tmp_path / "grid/runs/sft").glob("*/summary.json")
    final = json.loads(summary_path.read_text())["final"]
    # the forward column is what the fit reported; on the synthetic world both scorings agree
    assert float(rows[0]["heldout_test_acc_forward"]) == final["heldout_test_acc"]
    assert float(rows[0]["heldout_test_acc_generate"]) == final["heldout_test_acc"]
    assert float(rows[0]["agreement"]) == 1.0 and int(rows[0]["facts"]) > 0
    assert "| sft | 1 |" in (tmp_path / "grid/rescore.md").read_text()
