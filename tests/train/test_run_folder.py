"""The run folder (docs/metrics.md, "summary.json"): ``<artifacts root>/<name>/<version>/`` holds
config.yaml, metrics.csv, summary.json, predictions/, checkpoints/ and model/ whatever the
logger, one folder per run; compare gives each cell its own folder and W&B run name."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from halluc_cl.cli import main
from halluc_cl.experiments.compare import compare
from halluc_cl.experiments.fit import resolved_config
from halluc_cl.train.run_files import RunArtifacts, next_version, version_name
from halluc_cl.train.summary_schema import summary_errors

ROOT = Path(__file__).resolve().parents[2]
SFT = ["--config", str(ROOT / "configs/sft.yaml"), "--config",
       str(ROOT / "configs/world/tiny.yaml")]
QUICK = ["--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false"]
WANDB = ["--trainer.logger", "lightning.pytorch.loggers.WandbLogger",
         "--trainer.logger.init_args.save_dir", "wandb_files"]
# logger -> (its options after configs/sft.yaml, the folder its runs go to)
LOGGERS = {
    "csv": ([], "runs/sft"),  # the configs' CSVLogger(save_dir=runs, name=sft)
    "tensorboard": (["--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger"],
                    "runs/sft"),  # save_dir and name carry over to the new logger class
    "wandb": (WANDB, "runs/fit"),  # no folder of its own: runs/fit, next free version_N
    "none": (["--trainer.logger", "false"], "runs/fit"),
}
NEEDS = {"tensorboard": "tensorboard", "wandb": "wandb"}  # the `tracking` extra


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    """W&B offline, with its settings, cache and files under ``tmp_path``."""
    for key, sub in (("WANDB_DIR", "wandb_files"), ("WANDB_CACHE_DIR", "wandb_cache"),
                     ("WANDB_CONFIG_DIR", "wandb_config"), ("WANDB_DATA_DIR", "wandb_data")):
        (tmp_path / sub).mkdir(exist_ok=True)
        monkeypatch.setenv(key, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def assert_complete(run: Path, epochs: int = 2, model: bool = True) -> dict:
    """Every file of a finished fit's run folder (``model/`` if saved); returns its summary."""
    summary = json.loads((run / "summary.json").read_text())
    assert summary_errors(summary) == [] and summary["epochs"] == epochs
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["source"] == \
        "synthetic://tiny"
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert sorted({int(r["epoch"]) for r in rows if r.get("heldout_test_acc")}) == \
        list(range(epochs))
    assert sorted(p.name for p in (run / "predictions").iterdir()) == \
        [f"epoch_{k}.jsonl" for k in range(epochs)]
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert (run / "model" / "model.safetensors").is_file() == model
    return summary


@pytest.mark.parametrize("logger", list(LOGGERS))
def test_each_logger_leaves_one_complete_run_folder_per_run(logger, tmp_path, monkeypatch,
                                                            tiny_model_dir, one_thread,
                                                            offline_wandb, capsys):
    if logger in NEEDS:
        pytest.importorskip(NEEDS[logger])
    monkeypatch.chdir(tmp_path)  # the default root, runs/, is relative to the working folder
    options, folder = LOGGERS[logger]
    for _ in range(2):
        main(["fit", *SFT, *QUICK, *options])
    runs = sorted(p for p in (tmp_path / folder).iterdir() if p.is_dir())
    assert [p.name for p in runs] == ["version_0", "version_1"]
    summaries = [assert_complete(run) for run in runs]
    assert summaries[0]["final"] == summaries[1]["final"]  # same seed, same results
    assert f"run folder: {folder}/version_1" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [Path(folder).name]
    if logger == "tensorboard":  # its event files in the run folder too
        assert all(list(run.glob("events.out.tfevents.*")) for run in runs)
    if logger == "wandb":
        assert len(list((tmp_path / "wandb_files" / "wandb").glob("offline-run-*"))) == 2


def test_artifacts_options_set_the_folder_whatever_the_logger(tmp_path, tiny_model_dir,
                                                              one_thread):
    root = tmp_path / "results"
    main(["fit", *SFT, *QUICK, "--trainer.logger.init_args.save_dir", str(tmp_path / "logs"),
          "--artifacts.root", str(root), "--artifacts.name", "study", "--artifacts.version", "3",
          "--artifacts.save_model", "false"])
    run = root / "study" / "version_3"
    assert (run / "summary.json").is_file() and (run / "metrics.csv").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "logs").exists()  # the CSV logger writes into the run folder
    logger = yaml.safe_load((run / "config.yaml").read_text())["trainer"]["logger"]
    assert logger["init_args"]["save_dir"] == str(root) and logger["init_args"]["version"] == 3


def test_logger_options_follow_the_artifacts_options():
    resolved = resolved_config(["fit", *SFT, "--artifacts.root", "out", "--artifacts.name", "m",
                                "--artifacts.version", "v1"])
    assert {k: resolved["trainer"]["logger"]["init_args"][k]
            for k in ("save_dir", "name", "version")} == {"save_dir": "out", "name": "m",
                                                          "version": "v1"}
    resolved = resolved_config(["fit", *SFT, *WANDB, "--artifacts.name", "m",
                                "--artifacts.version", "3"])
    assert resolved["trainer"]["logger"]["init_args"]["name"] == "m/version_3"
    both = json.dumps([{"class_path": "lightning.pytorch.loggers.CSVLogger",
                        "init_args": {"save_dir": "a"}},
                       {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                        "init_args": {"save_dir": "b"}}])
    resolved = resolved_config(["fit", *SFT, "--trainer.logger", both, "--artifacts.root", "c"])
    assert [lg["init_args"]["save_dir"] for lg in resolved["trainer"]["logger"]] == ["c", "c"]


def test_compare_gives_each_cell_its_folder_and_wandb_run_name(tmp_path, monkeypatch,
                                                                tiny_model_dir, one_thread,
                                                                offline_wandb):
    pytest.importorskip("wandb")
    monkeypatch.chdir(tmp_path)
    methods = {"sft": [str(ROOT / "configs/sft.yaml"), str(ROOT / "configs/world/tiny.yaml")]}
    results = compare(methods, seeds=[0, 1], out="grid", plots=False,
                      fit_args=[*QUICK[:2], *WANDB])
    runs = [Path(r.run_dir) for r in results]
    assert len(set(runs)) == 2 and all(run.parent == Path("grid/runs/sft") for run in runs)
    for run in runs:
        assert_complete(run, model=False)  # compare's cells: --artifacts.save_model false
        logger = yaml.safe_load((run / "config.yaml").read_text())["trainer"]["logger"]
        assert logger["init_args"]["name"] == f"sft/{run.name}"  # the W&B run's name
    assert len(list(Path("wandb_files/wandb").glob("offline-run-*"))) == 2  # one W&B run each
    assert not Path("runs").exists()


def test_rank_zero_chooses_the_folder_and_every_rank_gets_it(tmp_path):
    """Under several processes only rank 0 looks for the next free version; the others take
    its choice from the broadcast (and add the same metrics.csv logger)."""
    (tmp_path / "fit" / "version_0").mkdir(parents=True)
    assert next_version(tmp_path / "fit") == 1 and version_name(1) == "version_1"
    chosen = {}

    def broadcast(obj, src=0):
        if obj is not None:  # rank 0's value
            chosen["value"] = obj
        return chosen["value"]

    ranks = [SimpleNamespace(is_global_zero=rank == 0, loggers=[],
                             strategy=SimpleNamespace(broadcast=broadcast)) for rank in (0, 1)]
    artifacts = [RunArtifacts(root=str(tmp_path)) for _ in ranks]
    runs = [artifacts[0].share_run(ranks[0])]
    (tmp_path / "fit" / "version_1").mkdir()  # rank 1 scanning now would pick version_2
    runs.append(artifacts[1].share_run(ranks[1]))
    assert runs == [tmp_path / "fit" / "version_1"] * 2
    assert [Path(t.loggers[0].log_dir) for t in ranks] == runs


def test_finished_run_folder_is_refused_for_any_logger(tmp_path, monkeypatch, tiny_model_dir,
                                                      capsys, summary_stub):
    run = tmp_path / "runs" / "fit" / "version_0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps(summary_stub()))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["fit", *SFT, *QUICK, "--trainer.logger", "false", "--artifacts.version", "0"])
    assert exc.value.code == 2
    assert "runs/fit/version_0 already holds a finished run" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["summary.json"]
