"""Mechanism studies: factor checks and tables by hand, and each shipped study end to end on
tiny worlds (its configs/analysis/<study>.yaml with every world swapped for a tiny one)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import yaml

from halluc_cl.analysis.studies import check_factors, study_csv, study_markdown, study_rows
from halluc_cl.cli import main
from halluc_cl.errors import ConfigError
from halluc_cl.experiments.config_files import find
from halluc_cl.experiments.tables import CellResult

ROOT = Path(__file__).resolve().parents[2]
METHODS = {"a": ["x.yaml"], "b": ["x.yaml"]}


@pytest.mark.parametrize(("factors", "x", "series", "message"), [
    ({"a": {"k": 1}}, "k", None, "have no entry in `factors`"),
    ({"a": {"k": 1}, "b": {"k": 2}, "c": {"k": 3}}, "k", None, "not in `methods`"),
    ({"a": {"k": 1}, "b": {"j": 2}}, "k", None, "sets no level for factor"),
    ({"a": {"k": 1}, "b": {"k": 2}}, "size", None, "x factor 'size'"),
    ({"a": {"k": 1}, "b": {"k": 2}}, "k", "size", "series factor 'size'"),
    ({"a": {"method": 1}, "b": {"method": 2}}, "method", None, "clash with the study table"),
])
def test_bad_factors_are_config_errors(factors, x, series, message):
    with pytest.raises(ConfigError, match=message):
        check_factors(METHODS, factors, x, series)


def _cell(method: str, seed: int, decline: float, new: float) -> CellResult:
    summary = {"heldout_test_decline": decline,
               "final": {"new_fact_acc": new, "heldout_drift": 0.1 * (seed + 1)}}
    return CellResult(method, 0.5, seed, f"runs/{method}/{seed}", summary)


def test_study_table_by_hand():
    results = [_cell("a", 0, 0.2, 1.0), _cell("a", 1, 0.4, 0.5), _cell("b", 0, 0.1, 0.8)]
    factors = {"a": {"key": "name"}, "b": {"key": "uuid"}}
    rows = study_rows(results, ["a", "b"], factors)
    table = list(csv.DictReader(io.StringIO(study_csv(rows, ["key"]))))
    assert [r["key"] for r in table] == ["name", "uuid"] and table[0]["seeds"] == "2"
    assert float(table[0]["heldout_decline_mean"]) == pytest.approx(0.3)
    assert float(table[0]["heldout_decline_std"]) == pytest.approx(0.1414214)  # sample std
    assert float(table[0]["heldout_drift_mean"]) == pytest.approx(0.15)
    assert table[1]["heldout_decline_std"] == "" and table[1]["hallucination_rate_mean"] == ""
    md = study_markdown("T", rows, ["key"])
    assert "| a | name | 2 | 0.300 ± 0.141 | 0.750 ± 0.354 | – | 0.150 ± 0.071 |" in md


# every world of the shipped studies -> (tiny world, overlay data) for the end-to-end runs
TINY_WORLDS = {None: "tiny", "default_uuid": "tiny-uuid", "default_overlap0": "tiny-overlap0",
               "default_overlap50": "tiny-overlap0", "capacity": "tiny",
               "capacity_small": "tiny-small", "capacity_large": "tiny"}
# the capacity study's New-fact counts -> tiny counts (8 Known facts in every mix: the
# 1-layer tiny-small model knows too few facts for more next to 16 held-out ones)
TINY_COUNTS = {"new_1e3": 8, "new_1e4": 24, "new_1e5": 48}


def _tiny_methods(methods: dict[str, list[str]], tmp: Path) -> dict[str, list[str]]:
    """The study's methods with each world and count overlay swapped for a tiny one."""
    out = {}
    for name, configs in methods.items():
        world, swapped = None, []
        for entry in configs:
            path = find(entry, ROOT / "configs/analysis")  # relative to the study's YAML
            stem = path.stem
            if path.parent.name == "world":
                world = stem
            elif stem in TINY_COUNTS:
                n = TINY_COUNTS[stem]
                swapped.append(_write(tmp / f"{stem}.yaml", {"data": {
                    "n_train": n + 8, "unknown_fraction": n / (n + 8), "eval_max_facts": 16}}))
            else:
                swapped.append(str(path))
        tiny = TINY_WORLDS[world]
        swapped.append(_write(tmp / f"world_{tiny}.yaml", {
            "model": {"model": f"synthetic://{tiny}"},
            "data": {"source": f"synthetic://{tiny}", "n_heldout": 8,
                     "n_heldout_val": 8}}))
        out[name] = swapped
    return out


def _write(path: Path, content: dict) -> str:
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return str(path)


@pytest.mark.parametrize("study", ["keys", "overlap", "capacity", "behaviour"])
def test_study_runs_end_to_end_on_tiny_worlds(study, tmp_path, tiny_model_dir, one_thread,
                                              capsys):
    config = yaml.safe_load((ROOT / f"configs/analysis/{study}.yaml").read_text())
    config.update(methods=_tiny_methods(config["methods"], tmp_path), seeds=[0],
                  out=str(tmp_path / "out"), fit_args=[
                      *config.get("fit_args", []), "--trainer.max_epochs", "2",
                      "--trainer.max_steps", "-1", "--data.n_train", "32",
                      "--data.batch_size", "16"])
    if study == "capacity":  # the count overlays set n_train; keep theirs
        config["fit_args"] = [a for a in config["fit_args"] if a not in ("--data.n_train", "32")]
    main(["analyze", study, "--config", _write(tmp_path / "study.yaml", config)])
    out = tmp_path / "out"
    table = list(csv.DictReader(io.StringIO((out / "study.csv").read_text())))
    assert [r["method"] for r in table] == list(config["methods"])
    for row in table:
        assert row["seeds"] == "1"
        assert 0.0 <= float(row["heldout_decline_mean"]) <= 1.0
        assert 0.0 <= float(row["heldout_drift_mean"]) <= 2.0  # drift is logged in every study
        for factor, level in config["factors"][row["method"]].items():
            assert row[factor] == str(level)
    assert (out / "study.png").read_bytes()[:4] == b"\x89PNG"
    assert "# H" in (out / "study.md").read_text()
    assert (out / "results.csv").is_file()
