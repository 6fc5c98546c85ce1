"""Config files by path or by shipped name, for every command, from any folder."""

from pathlib import Path

import pytest
import yaml

from halluc_cl.cli import main
from halluc_cl.experiments.config_files import SHIPPED, config_args, find, setting_folder

ROOT = Path(__file__).resolve().parents[2]


def test_the_checkout_links_configs_to_the_shipped_folder():
    assert (ROOT / "configs").resolve() == SHIPPED
    assert (SHIPPED / "distill.yaml").is_file() and (SHIPPED / "compare/paper.yaml").is_file()


def test_shipped_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find("distill") == SHIPPED / "distill.yaml"
    assert find("world/tiny") == find("world/tiny.yaml") == SHIPPED / "world/tiny.yaml"
    assert find("configs/compare/paper.yaml") == SHIPPED / "compare/paper.yaml"  # the docs' path
    assert find("nope") is None
    assert find("../cli.py") is None  # never a file outside the shipped folder
    assert find("world/tiny", base=tmp_path) == SHIPPED / "world/tiny.yaml"


def test_a_file_is_taken_before_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sft.yaml").write_text("seed_everything: 1\n")
    assert find("sft.yaml") == Path("sft.yaml")
    assert find("sft") == SHIPPED / "sft.yaml"  # a bare name is a shipped config
    (tmp_path / "grid").mkdir()
    (tmp_path / "grid" / "sft.yaml").write_text("seed_everything: 2\n")
    assert find("sft.yaml", base=tmp_path / "grid") == tmp_path / "grid" / "sft.yaml"


def test_config_args_rewrite_names_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("{}\n")
    args = ["fit", "--config", "distill", "-c", "world/tiny", "--config=sft", "--config",
            "mine.yaml", "--config", "{trainer: {max_epochs: 2}}", "--model.model", "sft"]
    assert config_args(args) == [
        "fit", "--config", str(SHIPPED / "distill.yaml"), "-c", str(SHIPPED / "world/tiny.yaml"),
        f"--config={SHIPPED / 'sft.yaml'}", "--config", "mine.yaml", "--config",
        "{trainer: {max_epochs: 2}}", "--model.model", "sft"]


def test_setting_folder_is_the_file_that_sets_the_key_last(tmp_path):
    (tmp_path / "a").mkdir()
    grid, other = tmp_path / "a" / "grid.yaml", tmp_path / "other.yaml"
    grid.write_text("methods: {sft: [sft]}\n")
    other.write_text("seeds: [1]\n")
    assert setting_folder(["--config", str(grid), "--config", str(other)], "methods") == grid.parent
    assert setting_folder([f"--config={grid}", "--methods", "{}"], "methods") is None
    assert setting_folder(["--config", str(other)], "methods") is None


@pytest.mark.parametrize("command", [["fit"], ["validate"], ["compare"], ["analyze", "keys"]])
def test_unknown_name_is_one_error_line_saying_where_it_looked(command, tmp_path, monkeypatch,
                                                               capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main([*command, "--config", "distlil"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1
    assert err[0] == (f"error: config 'distlil' is neither a file nor a shipped config (looked "
                      f"for {tmp_path / 'distlil'}, {SHIPPED / 'distlil'}, "
                      f"{SHIPPED / 'distlil.yaml'})")


def test_fit_finds_shipped_configs_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", "distill", "--config", "world/tiny", "--print_config"])
    assert exc.value.code == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["model"]["model"] == "synthetic://tiny"
    assert cfg["model"]["methods"][0]["class_path"].endswith("KLSelfDistillation")
    assert list(tmp_path.iterdir()) == []


def _dry_run(capsys, *args: str) -> list[str]:
    main(["compare", *args, "--dry_run", "true"])
    return [line for line in capsys.readouterr().out.splitlines() if "  to run " in line]


def test_shipped_grid_runs_from_any_folder_with_the_same_cells(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    expected = _dry_run(capsys, "--config", "configs/compare/tiny.yaml")
    monkeypatch.chdir(tmp_path)
    cells = _dry_run(capsys, "--config", "compare/tiny")
    assert len(cells) == 2
    # the same cells, hashes and folders: config file paths do not enter a cell's hash
    assert [c.split()[:3] for c in cells] == [c.split()[:3] for c in expected]
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing


def test_grid_entries_are_relative_to_their_yaml(tmp_path, monkeypatch, capsys):
    grid = tmp_path / "grid"
    grid.mkdir()
    (grid / "short.yaml").write_text("trainer: {max_epochs: 2}\n")
    (grid / "grid.yaml").write_text(yaml.safe_dump({
        "methods": {"short": ["sft", "world/tiny", "short.yaml"]}, "seeds": [0],
        "out": "results"}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (cell,) = _dry_run(capsys, "--config", str(grid / "grid.yaml"))
    assert f"--config {grid / 'short.yaml'} " in cell
    assert f"--config {SHIPPED / 'sft.yaml'} --config {SHIPPED / 'world/tiny.yaml'} " in cell
    # on the command line, entries are relative to the working directory
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--config", str(grid / "grid.yaml"), "--methods",
              '{"short": ["sft", "short.yaml"]}', "--dry_run", "true"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: method 'short': config 'short.yaml' is neither a file nor "
                              f"a shipped config (looked for {elsewhere / 'short.yaml'}")
