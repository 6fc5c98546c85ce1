"""``halluc-cl evaluate``: a saved model's metrics without training, on a run's splits (equal to
the run's final metrics) or on every fact of a file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from halluc_cl.cli import main
from halluc_cl.data.datamodule import FactDataModule
from halluc_cl.experiments.evaluate import RUN_METRICS, evaluate
from halluc_cl.facts.schema import write_facts

ROOT = Path(__file__).resolve().parents[2]
# a run whose split and evaluated subsets differ from the defaults
FIT = ["fit", "--config", str(ROOT / "configs/sft.yaml"), "--config",
       str(ROOT / "configs/world/tiny.yaml"), "--trainer.max_epochs", "2",
       "--trainer.enable_progress_bar", "false", "--data.split_seed", "3",
       "--data.eval_max_facts", "10", "--data.eval_batch_size", "7"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir) -> Path:
    out = tmp_path_factory.mktemp("evaluate")
    main([*FIT, "--trainer.logger.init_args.save_dir", str(out)])
    return out / "sft" / "version_0"


def test_evaluate_reproduces_the_runs_final_metrics(run, tmp_path, one_thread, capsys):
    final = json.loads((run / "summary.json").read_text())["final"]
    capsys.readouterr()
    main(["evaluate", "--model", str(run / "model"), "--run", str(run),
          "--out", str(tmp_path / "eval.json")])
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["metrics"] == {k: final[k] for k in RUN_METRICS}  # exactly, every split
    sets = result["sets"]
    assert list(sets) == ["heldout_test", "heldout_val", "unknown_train", "known_train"]
    # the sets' shares are exact fractions of the predictions, the metrics float32 as logged
    assert [sets[s]["acc"] for s in ("heldout_test", "heldout_val", "unknown_train",
                                     "known_train")] == pytest.approx(
        [final[k] for k in ("heldout_test_acc", "heldout_val_acc", "new_fact_acc",
                            "known_train_acc")], abs=1e-6)
    assert sets["heldout_test"]["facts"] == 16 and sets["known_train"]["facts"] == 10
    assert sets["heldout_test"]["categories"] == {"HighlyKnown": {
        k: sets["heldout_test"][k] for k in ("facts", "acc", "abstained")}}
    assert result["settings"]["eval_method"] == "forward"
    out = capsys.readouterr().out
    assert "heldout_test" in out and f"{final['new_fact_acc']:.3f}" in out


def test_evaluate_defaults_to_the_runs_model(run, one_thread):
    result = evaluate(run=str(run / "config.yaml"))
    assert result["model"] == str(run / "model") and result["data"] == "synthetic://tiny"
    final = json.loads((run / "summary.json").read_text())["final"]
    assert result["metrics"]["new_fact_acc"] == final["new_fact_acc"]


def test_every_fact_of_a_file_agrees_with_the_split_scores(run, tmp_path, one_thread):
    """A file of the run's held-out test facts plus two uncategorised ones: ``all`` scores
    them as the run's ``heldout_test`` split was scored, and reports per category."""
    split = FactDataModule(source="synthetic://tiny", tokenizer="synthetic://tiny",
                           n_train=32, n_heldout=16, n_heldout_val=16, split_seed=3)
    split.load()
    held = split.splits["heldout_test"]
    extra = [dataclasses.replace(f, id=f"{f.id}-x", category=None)
             for f in split.splits["unknown_train"][:2]]
    write_facts(tmp_path / "facts.jsonl", held + extra)
    by_split = evaluate(model=str(run / "model"), run=str(run))["sets"]["heldout_test"]
    result = evaluate(model=str(run / "model"), data=str(tmp_path / "facts.jsonl"))
    assert result["facts"] == "all" and result["metrics"] == {}
    every = result["sets"]["all"]
    assert every["facts"] == 18
    assert every["categories"] == {"HighlyKnown": {k: by_split[k] for k in
                                                   ("facts", "acc", "abstained")}}


def test_evaluate_a_base_model_on_every_fact(tmp_path, tiny_model_dir, one_thread, capsys):
    result = evaluate(model="synthetic://tiny", data="synthetic://tiny", eval_method="generate")
    every = result["sets"]["all"]
    categories = every["categories"]
    assert sum(c["facts"] for c in categories.values()) == every["facts"] > 100
    assert next(iter(categories)) == "HighlyKnown" and categories["HighlyKnown"]["acc"] == 1.0
    assert "  Unknown" in capsys.readouterr().out  # one table row per category


@pytest.mark.parametrize(("args", "message"), [
    (["evaluate", "--model", "synthetic://tiny"], "evaluate needs --data"),
    (["evaluate", "--model", "synthetic://tiny", "--data", "synthetic://tiny", "--facts", "run"],
     "--facts run needs --run"),
    (["evaluate", "--data", "synthetic://tiny", "--run", "no/such/run"],
     "no/such/run does not exist"),
    (["evaluate", "--model", "synthetic://tiny", "--data", "no_such.jsonl"],
     "fact file not found: no_such.jsonl"),
    (["evaluate", "--model", "synthetic://tiny", "--data", "synthetic://tiny", "--out", "."],
     "is a folder"),
    (["predict", "--config", str(ROOT / "configs/sft.yaml")], "unknown command 'predict'"),
])
def test_evaluate_input_errors_are_one_line(args, message, tmp_path, monkeypatch, capsys,
                                           tiny_model_dir):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(args)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert exc.value.code == 2 and len(errors) == 1 and "Traceback" not in err
    assert message in errors[0]
    assert list(tmp_path.iterdir()) == []
