"""End-to-end: the CLI on the tiny world, and the user errors it turns into ``error:`` lines."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from halluc_cl.cli import main
from halluc_cl.experiments import config_files

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config", str(ROOT / "configs/world/tiny.yaml")]


def method_configs(method: str) -> list[str]:
    """A shipped method's config files (``config_files.method_configs``)."""
    return [str(p) for p in config_files.method_configs(method)]


def fit(config: str | list[str], tmp_path: Path, *extra: str) -> Path:
    configs = [config] if isinstance(config, str) else config
    main(["fit", *(a for c in configs for a in ("--config", str(ROOT / c))), *TINY,
          "--trainer.logger.init_args.save_dir", str(tmp_path), *extra])
    runs = (tmp_path / Path(configs[-1]).stem).glob("version_*")
    return max(runs, key=lambda p: int(p.name.split("_")[1]))


@pytest.mark.parametrize("config", ["configs/sft.yaml", "configs/distill.yaml"])
def test_fit_end_to_end(config, tmp_path, tiny_model_dir, capsys):
    run = fit(config, tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["epochs"] == 3 and summary["warmup_epochs"] == 1
    assert set(summary["final"]) >= {"heldout_test_acc", "heldout_val_acc", "new_fact_acc",
                                     "known_train_acc", "hallucination_rate", "abstain_rate"}
    assert 0.0 <= summary["heldout_test_decline"] <= 1.0
    assert 0.0 <= summary["heldout_val_decline"] <= 1.0
    protocol = summary["protocol"]
    assert protocol["heldout_disjoint"] == "subject" and protocol["split_seed"] == 0
    assert protocol["split_sizes"]["heldout_test"] == protocol["split_sizes"]["heldout_val"] == 16
    assert len(protocol["config_hash"]) == 64 and summary["schema_version"] == 5
    # losses from the snapshot: the warm-up's end record against the last evaluations
    snap, history = summary["snapshot"], summary["history"]
    for split in ("heldout_test", "heldout_val"):
        block, at_snapshot = snap[split], summary["warmup_end"][f"{split}_acc"]
        assert block["acc"] == at_snapshot
        assert block["snapshot_loss"] == pytest.approx(at_snapshot - summary["final"][f"{split}_acc"])
        after = [h[f"{split}_acc"] for h in history if h["epoch"] > 0][-snap["window"]:]
        assert block["lasting_loss"] == pytest.approx(at_snapshot - sum(after) / len(after))
        n = protocol["split_sizes"][split]
        assert round(at_snapshot * n) == len(block["kept_ids"]) + len(block["forgotten_ids"])
        assert block["forgotten"] == len(block["forgotten_ids"])
        assert block["snapshot_loss"] == pytest.approx((block["forgotten"] - block.get("gained", 0)) / n)
    assert "heldout_test_lasting_loss" in history[-1] and "new_fact_gained" in history[-1]
    cost = summary["cost"]
    assert cost["student_tokens"] > 0 and (cost["teacher_tokens"] > 0) == ("distill" in config)
    assert summary["methods"] == (["KLSelfDistillation"] if "distill" in config else [])
    preds = [json.loads(line) for line in (run / "predictions/epoch_2.jsonl").read_text().splitlines()]
    assert {p["split"] for p in preds} == {"heldout_test", "heldout_val", "known_train",
                                           "unknown_train"}
    assert (run / "metrics.csv").is_file() and (run / "config.yaml").is_file()
    assert (run / "model/model.safetensors").is_file() and (run / "model/tokenizer.json").is_file()
    out = capsys.readouterr().out
    assert "heldout_test_acc" in out and "final" in out and "peak" in out
    lasting = snap["heldout_test"]["lasting_loss"]  # the headline, on the closing table
    assert f"heldout_test_lasting_loss{lasting:>11.3f}\n" in out


@pytest.mark.parametrize("method, plugins", [
    ("l2", ["L2ToAnchor"]), ("ewc", ["EWC"]), ("freeze_attention_only", ["Freeze"]),
    ("lora", ["LoRA"]), ("replay", []), ("replay_matched", ["ReplayLoss"]), ("idk", []),
])
def test_method_configs_fit_end_to_end(method, plugins, tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    # the tiny world's pool holds 18 facts: replay 14 of them per epoch instead of 32
    extra = ["--data.replay_fraction", "0.3"] if method == "replay" else []
    run = fit(method_configs(method), tmp_path, *extra)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["methods"] == plugins and summary["epochs"] == 3
    assert "new_fact_abstain_rate" in summary["final"]
    model = AutoModelForCausalLM.from_pretrained(run / "model")  # LoRA: merged, plain HF
    assert not any("lora" in n for n, _ in model.named_parameters())


def test_distill_logs_penalty_only_after_warmup(tmp_path, tiny_model_dir):
    import csv

    run = fit("configs/distill.yaml", tmp_path, "--trainer.log_every_n_steps", "1")
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    with_penalty = {int(r["epoch"]) for r in rows if r.get("reg/distill")}
    assert with_penalty and min(with_penalty) >= 1  # epoch 0 is the warm-up


def test_fit_is_deterministic(tmp_path, tiny_model_dir):
    a = json.loads((fit("configs/sft.yaml", tmp_path / "a") / "summary.json").read_text())
    b = json.loads((fit("configs/sft.yaml", tmp_path / "b") / "summary.json").read_text())
    for s in (a, b):
        s.pop("wall_time_s")
    assert a == b


def test_print_config_shows_regularizer(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(ROOT / "configs/distill.yaml"), "--print_config"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "halluc_cl.methods.KLSelfDistillation" in out and "temperature: 0.5" in out


def _error_line(capsys, args) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ")
    return err[-1]


def test_unknown_config_key_is_one_error_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  regularisers: []\n")
    line = _error_line(capsys, ["fit", "--config", str(ROOT / "configs/sft.yaml"), "--config",
                                str(bad)])
    assert "regularisers" in line


def test_missing_model_path(tmp_path, capsys):
    line = _error_line(capsys, ["fit", "--config", str(ROOT / "configs/sft.yaml"), *TINY,
                                "--model.model", str(tmp_path / "nope")])
    assert "model folder not found" in line


def test_infeasible_unknown_fraction(tmp_path, tiny_model_dir, capsys):
    line = _error_line(capsys, ["fit", "--config", str(ROOT / "configs/sft.yaml"), *TINY,
                                "--data.n_train", "1000", "--data.unknown_fraction", "0.99"])
    assert "infeasible" in line


def test_unknown_regularizer_class_path(capsys):
    line = _error_line(capsys, ["fit", "--config", str(ROOT / "configs/sft.yaml"), *TINY,
                                "--model.methods", '[{"class_path": "no.such.Plugin"}]'])
    assert line.startswith("error:")


def test_pretrain_command_uses_cache(tiny_model_dir, capsys):
    main(["pretrain", "--world", "tiny"])
    out = capsys.readouterr().out
    assert str(tiny_model_dir) in out and "Building" not in out


METHODS = ["distill", "l2", "ewc", "freeze_attention_only", "freeze_mlp_only", "lora", "replay",
           "replay_matched", "idk", "gekhman_known"]


def _merge(base: dict, overlay: dict) -> dict:
    out = dict(base)
    for key, value in overlay.items():
        out[key] = _merge(base[key], value) if isinstance(value, dict) and key in base else value
    return out


@pytest.mark.parametrize("method", METHODS)
def test_method_overlay_is_small_and_names_its_run(method):
    """configs/method/<m>.yaml sets the method's own keys on top of configs/sft.yaml (no copy
    of the shared settings) and names the run folder after the method."""
    import yaml

    overlay = yaml.safe_load((ROOT / "configs/method" / f"{method}.yaml").read_text())
    assert overlay["trainer"]["logger"]["init_args"]["name"] == method
    assert set(overlay) <= {"trainer", "model", "data"} and set(overlay["trainer"]) == {"logger"}
    shared = _leaves(yaml.safe_load((ROOT / "configs/sft.yaml").read_text()))
    groups: dict[str, list[bool]] = {}  # "model.optimizer" -> which of its values are sft's
    for key, value in _leaves(overlay).items():
        groups.setdefault(".".join(key.split(".")[:2]), []).append(shared.get(key) == value)
    restated = [g for g, same in groups.items() if all(same) and g != "trainer.logger"]
    assert restated == []  # every setting it gives changes something of sft.yaml


def _leaves(cfg: dict, prefix: str = "") -> dict:
    """A nested config as ``{dotted key: value}``."""
    out = {}
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        out.update(_leaves(value, dotted + ".") if isinstance(value, dict) else {dotted: value})
    return out


def test_distill_is_sft_plus_its_overlay():
    """configs/distill.yaml, the documented main command, stays whole: it is sft.yaml with
    the distill overlay."""
    import yaml

    def load(path):
        return yaml.safe_load((ROOT / "configs" / path).read_text())

    full, composed = load("distill.yaml"), _merge(load("sft.yaml"), load("method/distill.yaml"))
    assert full == composed


@pytest.mark.parametrize("overlay", ["method/distill.yaml", "method/distill_paper.yaml",
                                     "method/distill_cached.yaml"])
def test_regularizer_overlays_compose(overlay, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(ROOT / "configs/sft.yaml"), "--config",
              str(ROOT / "configs" / overlay), "--print_config"])
    out = capsys.readouterr().out
    assert "KLSelfDistillation" in out and "extra_per_batch" in out


@pytest.mark.parametrize("method", ["sft", "lora"])
def test_validate_from_last_checkpoint_keeps_reference(method, tmp_path, tiny_model_dir, capsys):
    configs = method_configs(method)  # LoRA: the checkpoint loads into the wrapped model
    run = fit(configs, tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    main(["validate", *(a for c in configs for a in ("--config", str(ROOT / c))), *TINY,
          "--trainer.logger.init_args.save_dir", str(tmp_path / "val"),
          "--ckpt_path", str(run / "checkpoints/last.ckpt")])
    out = capsys.readouterr().out
    assert "hallucination_rate" in out and "heldout_test_acc" in out
    preds = (tmp_path / f"val/{method}/version_0/predictions/epoch_0.jsonl").read_text()
    preds = preds.splitlines()
    final = [json.loads(p) for p in preds if json.loads(p)["split"] == "heldout_test"]
    acc = sum(p["correct"] for p in final) / len(final)
    assert acc == summary["final"]["heldout_test_acc"]  # same weights, same answers


def test_distill_with_extra_inputs_and_base_snapshot(tmp_path, tiny_model_dir):
    import csv

    run = fit("configs/distill.yaml", tmp_path, "--data.extra_per_batch", "8",
              "--model.methods.init_args.extra_weight", "3",
              "--model.methods.init_args.weight", "0", "--model.snapshot", "base",
              "--trainer.log_every_n_steps", "1")
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert any(float(r["reg/distill"]) > 0 for r in rows if r.get("reg/distill"))
    assert json.loads((run / "summary.json").read_text())["epochs"] == 3


def test_nested_argument_error_keeps_its_reason(capsys):
    line = _error_line(capsys, ["fit", "--config", str(ROOT / "configs/distill.yaml"), *TINY,
                                "--model.methods.init_args.direction", "sideways"])
    assert "sideways" in line or "direction" in line


def test_extra_weight_without_distill_inputs_fails_before_training(tmp_path, tiny_model_dir,
                                                                  capsys):
    line = _error_line(capsys, ["fit", "--config", str(ROOT / "configs/distill.yaml"), *TINY,
                                "--data.extra_per_batch", "0",
                                "--trainer.logger.init_args.save_dir", str(tmp_path)])
    assert "extra_per_batch" in line


@pytest.mark.parametrize("args", [[], ["-h"], ["--help"]])
def test_help_lists_every_command_once(args, capsys):
    from halluc_cl.cli import ANALYSES, COMMANDS, VERBS

    main(args)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("usage: halluc-cl <command>")
    names = [*VERBS, *COMMANDS, *(f"analyze {study}" for study in ANALYSES)]
    assert {"fit", "validate", "test", "pretrain", "probe", "compare", "analyze keys"} <= set(names)
    for name in names:  # one line each, with a description
        (line,) = [x for x in lines if x.startswith(f"  {name} ")]
        assert len(line.split()) > len(name.split()) + 2


def test_help_lines_are_the_functions_docstrings():
    from halluc_cl import api
    from halluc_cl.cli import ANALYSES, COMMANDS, GRIDS, VERBS, command_function, summary
    from halluc_cl.experiments import fit

    assert tuple(VERBS) == fit.VERBS
    for name, line in COMMANDS.items():
        assert line == summary(getattr(api, name)), name
    for name in ("attribution", "rescore"):
        assert ANALYSES[name] == summary(command_function(f"analyze {name}")), name
    for grid in GRIDS[1:]:  # each study's line is its shipped config's title
        assert command_function(grid) is api.mechanism_study
        assert (ROOT / "configs/analysis" / f"{grid.split()[1]}.yaml").is_file()


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_help_and_version_import_neither_torch_nor_lightning(args):
    code = ("import sys; from halluc_cl.cli import main; main(sys.argv[1:]); "
            "print(sorted(m for m in ('torch', 'lightning', 'transformers', 'jsonargparse') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines()[-1] == "[]"


@pytest.mark.parametrize("command", ["predict", "fitt"])
def test_unknown_command_names_the_commands(command, capsys):
    from halluc_cl.cli import COMMANDS

    line = _error_line(capsys, [command, "--config", "sft"])
    assert line == (f"error: unknown command {command!r}; the commands are fit, validate, test, "
                    f"{', '.join(COMMANDS)}, analyze (halluc-cl --help)")


def test_version(capsys):
    import importlib.metadata

    main(["--version"])
    assert capsys.readouterr().out == f"halluc-cl {importlib.metadata.version('halluc-cl')}\n"


def test_bare_fit_trains_as_long_as_the_shipped_configs():
    import yaml

    from halluc_cl.experiments.fit import resolved_config

    shipped = yaml.safe_load((ROOT / "configs/sft.yaml").read_text())["trainer"]["max_epochs"]
    assert resolved_config(["fit"])["trainer"]["max_epochs"] == shipped == 25  # not 1000


def test_a_fit_teaches_an_answer_format_and_reports_its_rate(tmp_path, tiny_model_dir):
    run = fit("configs/sft.yaml", tmp_path, "--config", str(ROOT / "configs/format.yaml"),
              "--trainer.max_epochs", "20", "--model.optimizer.init_args.lr", "3e-3")
    final = json.loads((run / "summary.json").read_text())["final"]
    assert final["format_rate"] > 0.5 and final["val_format_rate"] > 0.5  # the task is learned
    assert final["heldout_test_acc"] > 0  # answers are matched without it:
    preds = [json.loads(line) for line in (run / "predictions/epoch_19.jsonl").read_text().splitlines()]
    assert any(p["prediction"].endswith(".") and p["correct"] for p in preds)


@pytest.mark.parametrize("fails", [False, True])
def test_a_finished_command_closes_its_process_group(fails, tmp_path, monkeypatch, capsys):
    """A gloo group left to interpreter exit can abort the process, so a command that finished
    destroys it; one that failed leaves it (its other ranks may still be in a collective)."""
    import torch.distributed as dist

    from halluc_cl.errors import ConfigError
    from halluc_cl.experiments import fit as fit_module

    def verb(args):  # what Lightning does when a fit starts on several processes
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                                world_size=1)
        if fails:
            raise ConfigError("a bad setting")

    monkeypatch.setattr(fit_module, "run_verb", verb)  # the CLI imports it when a verb runs
    try:
        if fails:
            with pytest.raises(SystemExit):
                main(["fit"])
        else:
            main(["fit"])
        assert dist.is_initialized() == fails
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
