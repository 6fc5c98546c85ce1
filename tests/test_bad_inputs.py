"""The bad-input catalogue (docs/errors.md): every case runs the real CLI and must end in exactly
one ``error:`` line that names the problem, exit code 2, no traceback, and no file written over.

Each case writes into ``out/``, which holds a sentinel file beforehand; afterwards ``out/`` must
hold exactly what it held (same bytes, same mtime), except where a case says otherwise.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from halluc_cl.cli import main

ROOT = Path(__file__).resolve().parents[1]
SFT = ["fit", "--config", str(ROOT / "configs/sft.yaml"),
       "--config", str(ROOT / "configs/world/tiny.yaml")]
KL = "halluc_cl.methods.KLSelfDistillation"


@dataclass
class Env:
    """Paths of one case: ``inputs/`` for files it reads, ``out/`` for what it may write."""

    tmp: Path
    tiny: Path
    summary: Callable[..., dict]  # the ``summary_stub`` fixture

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def fit(self, *extra: str) -> list[str]:
        return [*SFT, "--trainer.logger.init_args.save_dir", str(self.out), *extra]

    def file(self, name: str, text: str | bytes) -> str:
        path = self.tmp / "inputs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return str(path)

    def tiny_facts(self) -> list[dict]:
        lines = (self.tiny / "facts.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    def jsonl(self, name: str, records: list) -> str:
        return self.file(name, "".join(json.dumps(r) + "\n" for r in records))

    def model_copy(self, name: str, drop_from_tokenizer_config: str) -> str:
        """A local copy of the tiny model whose tokenizer config lacks one key."""
        path = self.tmp / "inputs" / name
        shutil.copytree(self.tiny, path)
        cfg = json.loads((path / "tokenizer_config.json").read_text())
        cfg.pop(drop_from_tokenizer_config)
        (path / "tokenizer_config.json").write_text(json.dumps(cfg))
        return str(path)


def _reg(class_path: str, **init_args) -> list[str]:
    return ["--model.methods",
            json.dumps([{"class_path": class_path, "init_args": init_args}])]


def _long_answers(env: Env) -> str:
    facts = env.tiny_facts()
    for f in facts:
        if f["category"] == "Unknown":
            f["object"] = " ".join([f["object"]] * 300)
            f["aliases"] = [f["object"]]
    return env.jsonl("long.jsonl", facts)


def _latin1_facts(env: Env) -> str:
    """Tiny facts whose second line was saved as Latin-1, not UTF-8."""
    first, second = env.tiny_facts()[:2]
    second["question"] = second["question"].replace("?", "(café)?")
    lines = [json.dumps(first), json.dumps(second, ensure_ascii=False)]
    return env.file("latin1.jsonl", "\n".join(lines).encode("latin-1") + b"\n")


def _merged(env: Env, name: str, **changed) -> str:
    """Tiny facts with a copy of the first one (another id, ``changed``) on line 2, as when
    two fact files are merged."""
    facts = env.tiny_facts()
    return env.jsonl(name, [facts[0], {**facts[0], "id": "b-w0-e0", **changed}, *facts[1:]])


def _finished_run(env: Env) -> None:
    """Another run's results in ``out/sft/version_0`` (another config, another summary)."""
    run = env.out / "sft" / "version_0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps(env.summary(model="synthetic://default")))
    (run / "config.yaml").write_text("model:\n  model: synthetic://default\n")


# id -> (argv from the case's Env, substrings the error line must hold, optional setup)
CASES = {
    "malformed-jsonl": (
        lambda e: e.fit("--data.source", e.file(
            "bad.jsonl", json.dumps(e.tiny_facts()[0]) + "\n{not json\n")),
        ["bad.jsonl:2:", "malformed JSON"]),
    "missing-required-fields": (
        lambda e: e.fit("--data.source", e.jsonl("missing.jsonl", [
            e.tiny_facts()[0], {"id": "x", "subject": "S"}])),
        ["missing.jsonl:2:", "missing or empty required field(s): relation, object, question"]),
    "duplicate-fact-ids": (
        lambda e: e.fit("--data.source", e.jsonl("dup.jsonl", [e.tiny_facts()[0]] * 2)),
        ["dup.jsonl:2:", "duplicate id 'w0-e0-birth_city' (first on line 1)"]),
    "fact-file-not-utf8": (
        lambda e: e.fit("--data.source", _latin1_facts(e)),
        ["latin1.jsonl:2:", "not UTF-8 text (byte 0xe9 at column", "save the file as UTF-8"]),
    "whitespace-only-question": (
        lambda e: e.fit("--data.source", e.jsonl("blank.jsonl", [
            e.tiny_facts()[0], {**e.tiny_facts()[1], "question": "  "}])),
        ["blank.jsonl:2:", "missing or empty required field(s): question"]),
    "blank-alias": (
        lambda e: e.fit("--data.source", e.jsonl("alias.jsonl", [
            {**e.tiny_facts()[0], "aliases": [e.tiny_facts()[0]["object"], " "]}])),
        ["alias.jsonl:1:", "missing or empty required field(s): aliases[1]"]),
    "contradicting-facts": (
        lambda e: e.fit("--data.source", _merged(e, "merged.jsonl", object="Nowhere",
                                                 aliases=["Nowhere"])),
        ["merged.jsonl:2:", "fact 'b-w0-e0' contradicts fact 'w0-e0-birth_city' (line 1)",
         "is 'Nowhere' here"]),
    "repeated-fact": (
        lambda e: e.fit("--data.source", _merged(e, "repeated.jsonl")),
        ["repeated.jsonl:2:", "fact 'b-w0-e0' repeats fact 'w0-e0-birth_city' (line 1)"]),
    "empty-fact-file": (
        lambda e: e.fit("--data.source", e.file("empty.jsonl", "\n")),
        ["empty.jsonl: no facts"]),
    "facts-without-categories": (
        lambda e: e.fit("--data.source", e.jsonl("raw.jsonl", [
            {k: v for k, v in f.items() if k not in ("category", "p_correct")}
            for f in e.tiny_facts()])),
        ["no knowledge category", "halluc-cl probe"]),
    "empty-heldout-split": (
        lambda e: e.fit("--data.n_heldout", "0"),
        ["n_heldout", "must be >= 1"]),
    "unknown-fraction-out-of-range": (
        lambda e: e.fit("--data.unknown_fraction", "1.5"),
        ["unknown_fraction must be in [0, 1], got 1.5"]),
    "infeasible-sizes": (
        lambda e: e.fit("--data.n_train", "1000"),
        ["infeasible split", "500 Known training facts needed (n_train=1000"]),
    "infeasible-unknown-fraction": (
        lambda e: e.fit("--data.n_train", "1000", "--data.unknown_fraction", "0.99"),
        ["infeasible unknown_fraction=0.99", "990 Unknown facts needed"]),
    "warm-up-fills-the-fit": (
        lambda e: e.fit("--trainer.max_epochs", "1"),
        ["trainer.max_epochs=1 ends the fit within the warm-up (model.warmup_epochs=1)",
         "set trainer.max_epochs above 1"]),
    "max-steps-within-the-warm-up": (
        lambda e: e.fit("--trainer.max_epochs", "-1", "--trainer.max_steps", "1"),
        ["trainer.max_steps=1 ends the fit within the warm-up", "takes 1 optimizer step(s)"]),
    "different-worlds": (
        lambda e: e.fit("--model.model", "synthetic://default"),
        ["name different synthetic worlds"]),
    "unknown-world-preset": (
        lambda e: e.fit("--model.model", "synthetic://nope", "--data.source", "synthetic://nope"),
        ["world 'nope'", "presets:"]),
    "pretrain-unknown-world": (
        lambda e: ["pretrain", "--world", "nope"],
        ["world 'nope'", "tiny"]),
    "unknown-regularizer-class": (
        lambda e: e.fit("--model.methods", '[{"class_path": "no.such.Plugin"}]'),
        ["model.methods", "class_path 'no.such.Plugin'", "No module named 'no'"]),
    "distill-negative-weight": (
        lambda e: e.fit(*_reg(KL, weight=-1.0)),
        ["KLSelfDistillation weights must be >= 0, got -1.0"]),
    "distill-negative-temperature": (
        lambda e: e.fit(*_reg(KL, temperature=-0.5)),
        ["KLSelfDistillation temperature must be > 0, got -0.5"]),
    "distill-zero-temperature": (
        lambda e: e.fit(*_reg(KL, temperature=0.0)),
        ["temperature must be > 0, got 0.0"]),
    "distill-unknown-direction": (
        lambda e: e.fit(*_reg(KL, direction="sideways")),
        ["direction", "sideways"]),
    "l2-negative-weight": (
        lambda e: e.fit(*_reg("halluc_cl.methods.L2ToAnchor", weight=-0.5)),
        ["L2ToAnchor weight must be >= 0, got -0.5"]),
    "ewc-negative-weight": (
        lambda e: e.fit(*_reg("halluc_cl.methods.EWC", weight=-2.0)),
        ["EWC weight must be >= 0, got -2.0"]),
    "ewc-zero-fisher-samples": (
        lambda e: e.fit(*_reg("halluc_cl.methods.EWC", fisher_samples=0)),
        ["EWC fisher_samples must be >= 1, got 0"]),
    "freeze-unknown-group": (
        lambda e: e.fit(*_reg("halluc_cl.methods.Freeze", groups=["attn"])),
        ["unknown parameter group 'attn'"]),
    "freeze-leaves-nothing-trainable": (
        lambda e: e.fit(*_reg("halluc_cl.methods.Freeze", groups=["regex:."])),
        ["leaves no trainable parameter"]),
    "missing-model-dir": (
        lambda e: e.fit("--model.model", str(e.tmp / "no_such_model")),
        ["model folder not found", "no_such_model"]),
    "hub-id-offline": (
        lambda e: e.fit("--model.model", "someorg/some-model", "--data.source",
                        "synthetic://tiny"),
        ["cannot load tokenizer 'someorg/some-model'", "HF_HUB_OFFLINE=1"]),
    "broken-gguf": (
        lambda e: e.fit("--model.model", e.file("broken.gguf", b"GGUF\x03\x00\x00\x00" + b"x" * 64),
                        "--data.source", "synthetic://tiny"),
        ["broken.gguf is not a valid GGUF file"]),
    "tokenizer-without-eos": (
        lambda e: e.fit("--model.model", e.model_copy("noeos", "eos_token"),
                        "--data.source", "synthetic://tiny"),
        ["has no EOS token"]),
    "answer-longer-than-context": (
        lambda e: e.fit("--data.source", _long_answers(e)),
        ["(unknown_train) is", "more than the model's context of 256 positions"]),
    "prompt-plus-answer-budget-over-context": (
        lambda e: e.fit("--model.max_new_tokens", "300"),
        ["with model.max_new_tokens=300 it exceeds the model's context of 256"]),
    "run-folder-holds-another-run": (
        lambda e: e.fit("--trainer.logger.init_args.version", "0"),
        ["already holds a finished run (summary.json)", "--artifacts.overwrite true"],
        _finished_run),
    "output-path-not-writable": (
        lambda e: [*SFT, "--trainer.logger.init_args.save_dir", str(e.out / "sentinel.txt")],
        ["cannot create the run folder", "Not a directory"]),
    "missing-checkpoint": (
        lambda e: e.fit("--ckpt_path", str(e.tmp / "nope.ckpt")),
        ["checkpoint not found", "nope.ckpt"]),
    "corrupt-checkpoint": (
        lambda e: e.fit("--ckpt_path", e.file("corrupt.ckpt", b"not a checkpoint" * 8)),
        ["cannot read checkpoint", "corrupt.ckpt: not a PyTorch checkpoint, or a corrupt one"]),
    "empty-checkpoint": (
        lambda e: e.fit("--ckpt_path", e.file("empty.ckpt", b"")),
        ["cannot read checkpoint", "empty.ckpt"]),
    "weights-only-false": (
        lambda e: e.fit("--weights_only", "false"),
        ["--weights_only false is not supported"]),
    "unknown-config": (
        lambda e: e.fit("--config", "distlil"),
        ["config 'distlil' is neither a file nor a shipped config", "configs/distlil.yaml)"]),
    "compare-unknown-method-config": (
        lambda e: ["compare", "--methods", json.dumps({"a": [str(e.tmp / "nope.yaml")]}),
                   "--out", str(e.out / "cmp")],
        ["nope.yaml", "method 'a': config", "is neither a file nor a shipped config"]),
    "compare-no-methods": (
        lambda e: ["compare", "--methods", "{}", "--out", str(e.out / "cmp")],
        ["compare needs at least one method"]),
    "probe-missing-source": (
        lambda e: ["probe", "--model", "synthetic://tiny", "--source", str(e.tmp / "nope.jsonl"),
                   "--out", str(e.out / "probe.jsonl")],
        ["fact file not found", "nope.jsonl"]),
    "unknown-command": (
        lambda e: ["fitt", "--config", "sft"],
        ["unknown command 'fitt'", "fit, validate, test", "halluc-cl --help"]),
    "analyze-unknown-study": (
        lambda e: ["analyze", "nope", "--run", str(e.out)],
        ["halluc-cl analyze needs a study", "attribution"]),
    "unknown-cli-option": (
        lambda e: e.fit("--data.unknown_fracton", "0.3"),
        ["unrecognized arguments: --data.unknown_fracton"]),
    "config-file-not-utf8": (
        lambda e: e.fit("--config", e.file("latin1.yaml", "trainer:\n  max_epochs: 3  # café\n"
                                           .encode("latin-1"))),
        ["latin1.yaml:2:", "not UTF-8 text (byte 0xe9 at column 23)"]),
    "yaml-key-typo": (
        lambda e: e.fit("--config", e.file("typo.yaml", "model:\n  regularisers: []\n")),
        ["regularisers"]),
}


def _files(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def _error_line(capsys, argv: list[str]) -> str:
    """Run the CLI in-process; it must exit 2 with one ``error:`` line and no traceback."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture
def env(tmp_path, tiny_model_dir, monkeypatch, one_thread, summary_stub) -> Env:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    e = Env(tmp_path, Path(tiny_model_dir), summary_stub)
    e.out.mkdir()
    (e.out / "sentinel.txt").write_text("do not touch\n")
    return e


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line(case, env, capsys):
    argv_of, expected, *setup = CASES[case]
    for fn in setup:
        fn(env)
    argv = argv_of(env)
    before = _files(env.out)
    line = _error_line(capsys, argv)
    for text in expected:
        assert text in line, line
    assert _files(env.out) == before  # nothing written over, nothing left behind


def test_catalogue_size():
    assert len(CASES) >= 25


def test_non_finite_loss_stops_and_keeps_last_checkpoint(env, capsys):
    """An lr of 1e30 survives the 1-step warm-up epoch (its checkpoint is saved), then the loss
    turns NaN: the fit stops with an error line that names the kept checkpoint."""
    before = _files(env.out)
    line = _error_line(capsys, env.fit("--model.optimizer.init_args.lr", "1e30"))
    run = env.out / "sft" / "version_0"
    ckpt = run / "checkpoints" / "last.ckpt"
    assert "non-finite loss nan" in line and f"the last checkpoint is kept: {ckpt}" in line
    assert torch.load(ckpt, weights_only=True)["epoch"] == 0
    assert not (run / "summary.json").exists() and not (run / "model").exists()
    after = _files(env.out)
    assert {k: after[k] for k in before} == before


FULL_DISK = "No space left on device (nothing earlier was written over)"


@pytest.mark.parametrize(("pattern", "after", "failed", "last_epoch"), [
    ("*.ckpt", 2, "checkpoints/epoch=1-step=3.ckpt", 0),  # after the warm-up's two saves
    ("epoch_1.jsonl", 0, "predictions/epoch_1.jsonl", 0),
    ("summary.json", 0, "summary.json", 1),
])
def test_full_disk_is_one_error_line_and_keeps_earlier_results(env, capsys, full_disk, pattern,
                                                               after, failed, last_epoch):
    """The disk fills up during the SFT epoch: the write that fails is named, the files
    written before it are unchanged, and no temporary file or summary is left."""
    disk = full_disk(pattern, after)
    line = _error_line(capsys, env.fit("--trainer.max_epochs", "2",
                                       "--artifacts.save_model", "false"))
    run = env.out / "sft" / "version_0"
    assert line == f"error: cannot write {run / failed}: {FULL_DISK}"
    assert len(disk.failed) == 1 and not Path(disk.failed[0]).exists()
    folder = (run / failed).parent
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == disk.before[0]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == last_epoch
    assert (run / "predictions" / "epoch_0.jsonl").is_file()
    assert not (run / "summary.json").exists() and not list(run.rglob("*.tmp"))


def test_full_disk_while_saving_the_model_folder(env, capsys, monkeypatch):
    from transformers import PreTrainedModel

    def full(self, folder, **kwargs):
        (Path(folder) / "model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full)
    line = _error_line(capsys, env.fit("--trainer.max_epochs", "2"))
    run = env.out / "sft" / "version_0"
    assert line == f"error: cannot write {run / 'model'}: {FULL_DISK}"
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == []
    assert not (run / "model").exists() and not (run / "summary.json").exists()
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_full_disk_under_lightnings_own_writers(env, capsys, monkeypatch):
    """metrics.csv is written by Lightning's CSV logger, not by halluc-cl's atomic writes."""
    from lightning.fabric.loggers.csv_logs import _ExperimentWriter

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device", self.metrics_file_path)

    monkeypatch.setattr(_ExperimentWriter, "save", full)
    line = _error_line(capsys, env.fit("--trainer.max_epochs", "2"))
    assert line == (f"error: cannot write {env.out / 'sft/version_0/metrics.csv'}: No space "
                    "left on device")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_output_folder(env, capsys):
    read_only = env.out / "read_only"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        before = _files(env.out)
        line = _error_line(capsys, [*SFT, "--trainer.logger.init_args.save_dir", str(read_only)])
        assert "cannot create the run folder" in line and "Permission denied" in line
        assert _files(env.out) == before
    finally:
        read_only.chmod(0o700)


def test_overwrite_flag_writes_over_a_finished_run(env, capsys):
    _finished_run(env)
    main(env.fit("--trainer.logger.init_args.version", "0", "--trainer.max_epochs", "2",
                 "--artifacts.overwrite", "true", "--artifacts.save_model", "false"))
    summary = json.loads((env.out / "sft/version_0/summary.json").read_text())
    assert summary["model"] == "synthetic://tiny" and summary["epochs"] == 2


def test_tokenizer_without_pad_token_uses_eos(env):
    """Not an error: a tokenizer without a pad token pads with its EOS token."""
    from halluc_cl.lm.loading import load_tokenizer

    tok = load_tokenizer(env.model_copy("nopad", "pad_token"))
    assert tok.pad_token_id is not None and tok.pad_token_id == tok.eos_token_id


def test_console_script_prints_one_error_line(tmp_path):
    """The same contract out of process: exit 2, one ``error:`` line, no traceback."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "halluc_cl.cli", *SFT, "--data.unknown_fracton",
                           "0.3"], check=False, capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: unrecognized arguments: --data.unknown_fracton 0.3"]
    assert list(tmp_path.iterdir()) == []
