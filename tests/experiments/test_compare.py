"""``halluc-cl compare``: the grid on the tiny world, resumption, and input errors."""

import copy
import csv
import itertools
import json
import shutil
from pathlib import Path

import pytest
import yaml

from halluc_cl import cli
from halluc_cl.errors import ConfigError
from halluc_cl.experiments import compare as compare_module
from halluc_cl.experiments.compare import compare
from halluc_cl.experiments.config_files import find
from halluc_cl.experiments.grid import Cell, grid, resolve_methods, validate

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("sft.yaml", "method/known_only.yaml", "world/tiny.yaml")


def copy_configs(dest: Path) -> dict[str, list[str]]:
    """Copies of the shipped configs (so a test may edit them) and the two tiny methods."""
    for name in SHIPPED:
        (dest / Path(name).name).write_text((ROOT / "configs" / name).read_text())
    sft, known_only, tiny = (str(dest / Path(n).name) for n in SHIPPED)
    return {"sft": [sft, tiny], "known_only": [sft, known_only, tiny]}


class Spy:
    """Counts the fits compare starts, running the real ``run_verb``."""

    def __init__(self, monkeypatch):
        self.calls: list[list[str]] = []
        self._main = compare_module.run_verb
        monkeypatch.setattr(compare_module, "run_verb", self)

    def __call__(self, args):
        self.calls.append(args)
        return self._main(args)

    def versions(self) -> list[str]:
        return [a[a.index("--artifacts.name") + 1] + "/"
                + a[a.index("--artifacts.version") + 1] for a in self.calls]


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory, tiny_model_dir):
    """sft at X = 0.25 and 0.75 plus the Known-only control (X = 0): three tiny fits."""
    root = tmp_path_factory.mktemp("compare")
    (root / "configs").mkdir()
    methods = copy_configs(root / "configs")
    compare(methods, seeds=[0], unknown_fractions=[0.25, 0.75], out=str(root / "out"))
    return root, methods


def test_compare_end_to_end(tiny_grid):
    root, _ = tiny_grid
    out = root / "out"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["method"], r["unknown_fraction"], r["seed"]) for r in rows] == [
        ("sft", "0.25", "0"), ("sft", "0.75", "0"), ("known_only", "0.0", "0")]
    for r in rows:
        summary = json.loads((Path(r["run_dir"]) / "summary.json").read_text())
        assert float(r["heldout_acc"]) == summary["final"]["heldout_test_acc"]
        assert r["config_hash"] == summary["protocol"]["config_hash"]
        assert Path(r["run_dir"]).name.endswith("_" + r["config_hash"][:10])
        assert 0.0 <= float(r["hallucination_rate"]) <= 1.0 and float(r["wall_time_s"]) > 0
        config = yaml.safe_load((Path(r["run_dir"]) / "config.yaml").read_text())
        assert config["data"]["unknown_fraction"] == float(r["unknown_fraction"])
        assert not (Path(r["run_dir"]) / "model").exists()  # --artifacts.save_model false
    assert rows[0]["run_dir"].startswith(str(out / "runs/sft/unk0.25_split0_seed0_"))
    md = (out / "results.md").read_text()
    assert "| sft | 0.25 | 0 |" in md and "| known_only | 0 | 0 |" in md
    assert "at commit" in md and "heldout_test (report)" in md
    assert "## Gekhman et al. linear fit" in md  # three distinct fractions: 0, 0.25, 0.75
    for png in ("heldout_test_acc.png", "pareto.png", "unknown_fraction.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG")


def test_compare_resumes_and_reruns_changed_method(tiny_grid, tmp_path, monkeypatch, capsys):
    src, _ = tiny_grid
    methods = copy_configs(tmp_path)  # same texts at other paths: still the same cells
    out = tmp_path / "out"
    shutil.copytree(src / "out", out)  # a moved grid folder is still complete
    summaries = sorted(out.glob("runs/*/*/summary.json"))
    mtimes = [p.stat().st_mtime_ns for p in summaries]
    spy = Spy(monkeypatch)
    compare(methods, seeds=[0], unknown_fractions=[0.25, 0.75], out=str(out), plots=False)
    assert spy.calls == []
    assert [p.stat().st_mtime_ns for p in summaries] == mtimes
    assert "skip sft/unk0.25_split0_seed0_" in capsys.readouterr().out

    known_only = Path(methods["known_only"][1])
    known_only.write_text(known_only.read_text() + "# a comment changes no setting\n")
    compare(methods, seeds=[0], unknown_fractions=[0.25, 0.75], out=str(out), plots=False)
    assert spy.calls == []
    old = {p.parent.name for p in out.glob("runs/known_only/*/summary.json")}
    known_only.write_text(known_only.read_text().replace(
        "unknown_fraction: 0.0", "unknown_fraction: 0.0\n  eval_batch_size: 128"))
    compare(methods, seeds=[0], unknown_fractions=[0.25, 0.75], out=str(out), plots=False)
    (version,) = spy.versions()
    assert version.startswith("known_only/unk0.0_split0_seed0_")
    assert version.split("/")[1] not in old  # a changed setting is a new cell
    assert old <= {p.parent.name for p in out.glob("runs/known_only/*/summary.json")}
    assert f"run {version}" in capsys.readouterr().out


def fake_fit(calls: list, summary: dict):
    """Stands in for ``run_verb``: writes ``summary`` as summary.json where the fit would."""
    def main(args):
        calls.append(args)
        arg = {k: v for k, v in itertools.pairwise(args) if k.startswith("--artifacts.")}
        run = Path(arg["--artifacts.root"], arg["--artifacts.name"], arg["--artifacts.version"])
        run.mkdir(parents=True, exist_ok=True)
        (run / "summary.json").write_text(json.dumps(summary))
    return main


def test_killed_run_is_cleared_and_rerun(tmp_path, monkeypatch, summary_stub):
    methods = {"sft": [str(ROOT / "configs/sft.yaml")]}
    calls = []
    monkeypatch.setattr(compare_module, "run_verb", fake_fit(calls, summary_stub()))
    compare(methods, seeds=[0, 1], out=str(tmp_path), plots=False)
    assert len(calls) == 2
    (killed,) = tmp_path.glob("runs/sft/unk0.5_split1_seed1_*")
    (killed / "summary.json").unlink()
    (killed / "metrics.csv").write_text("partial\n")
    compare(methods, seeds=[0, 1], out=str(tmp_path), plots=False)
    assert len(calls) == 3 and "--data.split_seed" in calls[-1]
    assert calls[-1][calls[-1].index("--seed_everything") + 1] == "1"
    assert not (killed / "metrics.csv").exists()
    compare(methods, seeds=[0, 1], out=str(tmp_path), plots=False,
            fit_args=["--trainer.max_epochs", "2"])  # new fit_args: every cell again
    assert len(calls) == 5 and calls[-1][-2:] == ["--trainer.max_epochs", "2"]


def test_grid_keeps_a_pinned_fraction():
    sft, known_only = str(ROOT / "configs/sft.yaml"), str(ROOT / "configs/method/known_only.yaml")
    cells = grid({"sft": [sft], "known_only": [sft, known_only]}, [0, 1], [0.25, 0.5])
    assert [(c.method, c.unknown_fraction, c.seed) for c in cells] == [
        ("sft", 0.25, 0), ("sft", 0.25, 1), ("sft", 0.5, 0), ("sft", 0.5, 1),
        ("known_only", 0.0, 0), ("known_only", 0.0, 1)]
    assert cells[0].version == "unk0.25_split0_seed0_"  # the hash comes with ``resolve``
    paired = grid({"sft": [sft]}, [5, 6], [0.5], split_seeds=[1, 2])
    assert [(c.seed, c.data_seed) for c in paired] == [(5, 1), (6, 2)]
    assert "--data.split_seed 1" in " ".join(paired[0].args())


def test_cell_hash_follows_the_resolved_config(tmp_path):
    config = tmp_path / "a.yaml"
    text = (ROOT / "configs/sft.yaml").read_text()
    config.write_text(text)
    cell = Cell("m", (str(config),), 0.5, 0).resolve([])
    assert len(cell.sha256) == 64
    assert cell.sha256 == Cell("other", (str(config),), 0.5, 0).resolve([]).sha256
    config.write_text(text + "# a comment\n")  # no setting changed: the same cell
    assert cell.sha256 == Cell("m", (str(config),), 0.5, 0).resolve([]).sha256
    # the same setting from another place: the same cell
    assert cell.sha256 == Cell("m", (str(config),), 0.5, 0).resolve(
        ["--trainer.max_epochs", "25"]).sha256
    assert cell.sha256 != Cell("m", (str(config),), 0.5, 0).resolve(
        ["--trainer.max_epochs", "2"]).sha256
    assert cell.sha256 != Cell("m", (str(config),), 0.5, 1).resolve([]).sha256
    assert cell.sha256 != Cell("m", (str(config),), 0.5, 0, split_seed=3).resolve([]).sha256
    # where results go is not part of the hash
    assert cell.sha256 == Cell("m", (str(config),), 0.5, 0).resolve(
        ["--trainer.logger.init_args.save_dir", str(tmp_path / "elsewhere")]).sha256


def test_a_plugin_under_either_class_path_is_one_cell(tmp_path):
    """``halluc_cl.methods.X`` and its former name ``halluc_cl.regularizers.X`` are one class:
    cells finished under one name stay valid under the other, and a real change still shows."""
    overlay = (ROOT / "configs/method/distill_paper.yaml").read_text()
    assert "class_path: halluc_cl.methods.KLSelfDistillation" in overlay
    paths = {}
    for name, text in [("new", overlay),
                       ("old", overlay.replace("halluc_cl.methods.", "halluc_cl.regularizers.")),
                       ("changed", overlay.replace("temperature: 0.5", "temperature: 0.25"))]:
        (tmp_path / f"{name}.yaml").write_text(text)
        paths[name] = Cell("m", (str(ROOT / "configs/sft.yaml"), str(tmp_path / f"{name}.yaml")),
                           0.5, 0).resolve([]).sha256
    assert paths["new"] == paths["old"] != paths["changed"]


def test_a_setting_added_later_keeps_the_hash_at_its_default():
    """``data.extra_select`` (first named ``distill_select``) came after results were made: at
    its default (what those cells ran with) the hash is the one of the config without it; the
    other value is a new cell."""
    from halluc_cl.experiments.config_hash import config_hash
    from halluc_cl.experiments.fit import resolved_config

    resolved = resolved_config(["fit", "--config", str(ROOT / "configs/distill.yaml")])
    assert resolved["data"]["extra_select"] == "random"
    with_default = config_hash(resolved)
    nearest = copy.deepcopy(resolved)
    nearest["data"]["extra_select"] = "nearest"
    del resolved["data"]["extra_select"]  # a config made before the setting existed
    resolved["data"].pop("distill_select", None)
    assert config_hash(resolved) == with_default != config_hash(nearest)


def test_renamed_settings_keep_the_hash_of_their_old_names():
    """Cells made under ``model.regularizers`` / ``data.distill_select`` (before 0.2) are the
    cells of the same config under ``model.methods`` / ``data.extra_select``."""
    from halluc_cl.experiments.config_hash import config_hash
    from halluc_cl.experiments.fit import resolved_config

    new = resolved_config(["fit", "--config", str(ROOT / "configs/distill.yaml")])
    assert new["model"]["methods"] and new["model"].get("regularizers") is None
    old = copy.deepcopy(new)
    old["model"]["regularizers"] = old["model"].pop("methods")
    old["data"]["distill_select"] = old["data"].pop("extra_select")
    assert config_hash(old) == config_hash(new)
    via_old = resolved_config(["fit", "--config", str(ROOT / "configs/sft.yaml"),
                               "--model.regularizers", "[]"])
    assert config_hash(via_old) == config_hash(resolved_config(
        ["fit", "--config", str(ROOT / "configs/sft.yaml")]))


def test_dry_run_lists_cells_and_fits_nothing(tmp_path, monkeypatch, capsys, summary_stub):
    calls = []
    monkeypatch.setattr(compare_module, "run_verb", fake_fit(calls, summary_stub()))
    methods = {"sft": [str(ROOT / "configs/sft.yaml")]}
    assert compare(methods, seeds=[0, 1], out=str(tmp_path / "out"), dry_run=True) == []
    out = capsys.readouterr().out
    assert calls == [] and not (tmp_path / "out").exists()
    lines = [line for line in out.splitlines() if "to run" in line]
    assert len(lines) == 2 and "sft/unk0.5_split1_seed1_" in lines[1]
    assert "2 cells, 0 done" in out


@pytest.mark.parametrize("name", ["paper", "fraction", "tiny", "select", "disjoint"])
def test_shipped_compare_configs_validate(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # entries are relative to the YAML or shipped names, not to cwd
    path = ROOT / f"configs/compare/{name}.yaml"
    cfg = yaml.safe_load(path.read_text())
    validate(cfg["methods"], cfg["seeds"], cfg["unknown_fractions"])
    resolved = resolve_methods(cfg["methods"], path.parent)
    assert all(Path(c).is_file() for configs in resolved.values() for c in configs)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"methods": {}}, "at least one method"),
    ({"methods": {"sft": ["no/such.yaml"]}}, "neither a file nor a shipped config"),
    ({"seeds": []}, "at least one seed"),
    ({"unknown_fractions": [0.5, 1.5]}, "outside [0, 1]"),
    ({"methods": {"a/b": ["configs/sft.yaml"]}}, "plain folder name"),
])
def test_invalid_grid_is_a_config_error(kwargs, message, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    args = {"methods": {"sft": ["configs/sft.yaml"]}, "out": str(tmp_path / "out"), **kwargs}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        compare(**args)
    assert not (tmp_path / "out").exists()  # nothing written


def test_cli_reports_config_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["compare", "--methods", '{"sft": ["no/such.yaml"]}',
                  "--out", str(tmp_path / "out")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: method 'sft': config 'no/such.yaml' is neither a file nor a "
                              "shipped config")


def test_cli_print_config(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["compare", "--config", str(ROOT / "configs/compare/paper.yaml"),
                  "--print_config"])
    assert exc.value.code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert list(cfg["methods"])[:4] == ["sft", "known_only", "distill", "distill_paper"]
    assert {"l2", "ewc", "freeze_attention_only", "lora", "replay_matched", "replay_epoch",
            "idk", "distill_paper_t2", "distill_answer", "gekhman_known"} <= set(cfg["methods"])
    for configs in cfg["methods"].values():  # every listed config exists
        assert all(find(c, ROOT / "configs/compare") for c in configs)
    assert cfg["seeds"] == [100, 101, 102, 103, 104] and cfg["out"] == "runs/compare/paper"
    assert cfg["report_split"] == "test"
    select = yaml.safe_load((ROOT / "configs/compare/select.yaml").read_text())
    assert not set(select["seeds"]) & set(cfg["seeds"])  # reported seeds never selected on
    assert select["report_split"] == "val"


def test_grids_sharing_a_folder_reuse_cells_and_keep_their_own_tables(tmp_path, monkeypatch,
                                                                         summary_stub):
    calls = []
    monkeypatch.setattr(compare_module, "run_verb", fake_fit(calls, summary_stub()))
    sft = str(ROOT / "configs/sft.yaml")
    compare({"sft": [sft]}, seeds=[0], out=str(tmp_path), plots=False)
    compare({"sft": [sft], "ko": [sft, str(ROOT / "configs/method/known_only.yaml")]}, seeds=[0],
            out=str(tmp_path), plots=False, tables="second")
    assert len(calls) == 2  # sft's identical cell is reused; only the new method runs
    assert "| ko |" not in (tmp_path / "results.md").read_text()
    assert "| ko |" in (tmp_path / "second.md").read_text()
    with pytest.raises(ConfigError, match="plain file name"):
        compare({"sft": [sft]}, seeds=[0], out=str(tmp_path), tables="../x")


def test_shards_split_the_grid_and_the_last_writes_the_tables(tmp_path, monkeypatch, capsys,
                                                             summary_stub):
    methods = {"sft": [str(ROOT / "configs/sft.yaml")]}
    calls = []
    monkeypatch.setattr(compare_module, "run_verb", fake_fit(calls, summary_stub()))
    kwargs = {"seeds": [0, 1, 2], "out": str(tmp_path), "plots": False}
    assert compare(methods, shard="1/2", **kwargs) == []  # seed 1 only
    assert [c[c.index("--seed_everything") + 1] for c in calls] == ["1"]
    assert not (tmp_path / "results.csv").exists()
    assert "1 of 3 cells finished" in capsys.readouterr().out
    results = compare(methods, shard="0/2", **kwargs)  # seeds 0 and 2: the grid is complete
    assert [c[c.index("--seed_everything") + 1] for c in calls] == ["1", "0", "2"]
    assert [r.seed for r in results] == [0, 1, 2] and (tmp_path / "results.csv").is_file()
    for bad in ("2/2", "1", "a/b", "-1/2"):
        with pytest.raises(ConfigError, match="shard must be i/n"):
            compare(methods, shard=bad, **kwargs)


def test_a_cell_locked_by_another_command_is_left_alone(tmp_path, monkeypatch, capsys,
                                                      summary_stub):
    from filelock import FileLock

    methods = {"sft": [str(ROOT / "configs/sft.yaml")]}
    calls = []
    monkeypatch.setattr(compare_module, "run_verb", fake_fit(calls, summary_stub()))
    kwargs = {"seeds": [0, 1], "out": str(tmp_path), "plots": False}
    cell = grid(methods, [1], [0.5])[0].resolve([])
    run = cell.run_dir(tmp_path)
    run.mkdir(parents=True)
    (run / "metrics.csv").write_text("being written\n")  # another command's fit in progress
    with FileLock(run.parent / f".{run.name}.lock"):
        assert compare(methods, **kwargs) == []
    assert len(calls) == 1 and (run / "metrics.csv").read_text() == "being written\n"
    assert f"busy {cell.name}" in capsys.readouterr().out
    compare(methods, **kwargs)  # released: the cell is fitted now
    assert len(calls) == 2 and (tmp_path / "results.csv").is_file()


@pytest.mark.parametrize("grid", sorted((ROOT / "configs/compare").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_shipped_grid_names_configs_that_parse(grid):
    from halluc_cl.experiments.grid import Cell, resolve_methods

    spec = yaml.safe_load(grid.read_text())
    for name, configs in resolve_methods(spec["methods"], grid.parent).items():
        cell = Cell(name, tuple(configs), spec["unknown_fractions"][0], spec["seeds"][0])
        assert len(cell.resolve(spec.get("fit_args", [])).sha256) == 64, name


@pytest.mark.parametrize("keep", [True, False])
def test_finished_cells_keep_their_checkpoints_only_if_asked(tmp_path, monkeypatch, summary_stub,
                                                             keep):
    calls = []
    fit = fake_fit(calls, summary_stub())

    def fit_with_checkpoint(args):
        fit(args)
        arg = {k: v for k, v in itertools.pairwise(args) if k.startswith("--artifacts.")}
        run = Path(arg["--artifacts.root"], arg["--artifacts.name"], arg["--artifacts.version"])
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.ckpt").write_bytes(b"weights")

    monkeypatch.setattr(compare_module, "run_verb", fit_with_checkpoint)
    compare({"sft": [str(ROOT / "configs/sft.yaml")]}, seeds=[0], out=str(tmp_path), plots=False,
            keep_checkpoints=keep)
    (summary,) = tmp_path.glob("runs/sft/*/summary.json")
    assert (summary.parent / "checkpoints" / "last.ckpt").is_file() == keep
    assert (tmp_path / "results.csv").is_file()
