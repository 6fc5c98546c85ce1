"""Model specs: routing (synthetic, folder, GGUF, hub id), safetensors only, offline errors."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from halluc_cl.errors import ModelLoadError
from halluc_cl.lm import loading
from halluc_cl.lm.loading import gguf_file, load_causal_lm, resolve

MISSING_HUB_ID = "halluc-cl-tests/no-such-model"


@pytest.fixture
def tiny_folder(tmp_path):
    model = GPT2LMHeadModel(GPT2Config(vocab_size=20, n_positions=8, n_embd=8, n_layer=1,
                                       n_head=2))
    model.save_pretrained(tmp_path / "m")
    return tmp_path / "m"


def test_a_synthetic_spec_is_resolved_above_lm():
    with pytest.raises(ModelLoadError, match="synthetic preset; pass it through "
                                             "halluc_cl.synthetic.resolve.resolve first"):
        resolve("synthetic://tiny")


def test_local_folder(tiny_folder):
    assert resolve(str(tiny_folder)) == (str(tiny_folder), {})
    model = load_causal_lm(str(tiny_folder), dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and not model.training


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="not a model folder"):
        resolve(str(tmp_path))
    with pytest.raises(ModelLoadError, match="model folder not found"):
        resolve("./no/such/folder")


def test_pickle_weights_are_refused(tiny_folder):
    state = {k: v.contiguous() for k, v in
             AutoModelForCausalLM.from_pretrained(tiny_folder).state_dict().items()}
    (tiny_folder / "model.safetensors").unlink()
    torch.save(state, tiny_folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="cannot load model"):
        load_causal_lm(str(tiny_folder))


def test_hub_id_passes_through_without_remote_code(monkeypatch):
    seen = {}

    def fake(name, **kwargs):
        seen.update(kwargs, name=name)
        return "model"

    monkeypatch.setattr(loading.AutoModelForCausalLM, "from_pretrained", fake)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_causal_lm("org/name") == "model"
    assert seen["name"] == "org/name" and seen["local_files_only"] is True
    assert seen["trust_remote_code"] is False and seen["use_safetensors"] is True


def test_offline_hub_id_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        loading.load_tokenizer(MISSING_HUB_ID)
    message = str(err.value)
    assert "HF_HUB_OFFLINE=1" in message and f"hf download {MISSING_HUB_ID}" in message
    assert "local model folder or a .gguf file" in message and "\n" not in message


def test_unreachable_hub_says_what_to_do(monkeypatch):
    def no_network(name, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(loading.AutoModelForCausalLM, "from_pretrained", no_network)
    with pytest.raises(ModelLoadError, match="hub cannot be reached.*hf download org/name"):
        load_causal_lm("org/name")


def test_gguf_specs_are_recognised(tmp_path):
    assert gguf_file("org/name") is None and gguf_file(str(tmp_path)) is None
    assert gguf_file("~/m.GGUF").name == "m.GGUF"
    (tmp_path / "weights.bin").write_bytes(b"")
    assert gguf_file(f"gguf://{tmp_path}/weights.bin") == tmp_path / "weights.bin"


def test_gguf_without_its_extra_is_one_error_line(tmp_path, monkeypatch, capsys):
    from halluc_cl.cli import main

    monkeypatch.setitem(sys.modules, "gguf", None)  # gguf is an extra: `import gguf` fails
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(ModelLoadError, match=r'pip install "halluc-cl\[gguf\]"'):
        load_causal_lm(str(model))
    facts = tmp_path / "facts.jsonl"
    facts.write_text(json.dumps({"id": "f1", "subject": "A", "relation": "r", "object": "B",
                                 "question": "A?"}) + "\n")
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", "sft", "--model.model", str(model), "--data.source", str(facts),
              "--trainer.logger.init_args.save_dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and err[-1].startswith("error: ")
    assert 'needs the gguf package' in err[-1] and 'pip install "halluc-cl[gguf]"' in err[-1]
