"""Named parameter groups on GPT-2, Llama and Qwen2 parameter names."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from halluc_cl.errors import ConfigError
from halluc_cl.lm.param_groups import select


def gpt2():
    return GPT2LMHeadModel(GPT2Config(vocab_size=30, n_positions=16, n_embd=8, n_layer=3, n_head=2))


def llama(cls=LlamaForCausalLM, config=LlamaConfig, tie=False):
    return cls(config(vocab_size=30, hidden_size=8, intermediate_size=16, num_hidden_layers=3,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tie))


def names(model, groups):
    return select(model, groups, [n for n, _ in model.named_parameters()])


def test_gpt2_groups():
    m = gpt2()
    assert names(m, ["attention"]) == [f"transformer.h.{i}.attn.{w}.{p}" for i in range(3)
                                       for w in ("c_attn", "c_proj") for p in ("weight", "bias")]
    assert all(".mlp." in n for n in names(m, ["mlp"])) and len(names(m, ["mlp"])) == 12
    assert names(m, ["embeddings"]) == ["transformer.wte.weight", "transformer.wpe.weight"]
    assert set(names(m, ["norms"])) == {f"transformer.h.{i}.ln_{j}.{p}" for i in range(3)
                                        for j in (1, 2) for p in ("weight", "bias")} | {
        "transformer.ln_f.weight", "transformer.ln_f.bias"}
    everything = names(m, ["attention", "mlp", "embeddings", "norms"])
    assert len(everything) == sum(1 for _ in m.parameters())  # the groups cover the model


def test_gpt2_tied_lm_head_is_listed_under_embeddings():
    with pytest.raises(ConfigError, match="'lm_head' matches nothing"):
        names(gpt2(), ["lm_head"])


@pytest.mark.parametrize("group, layers", [("layers[1:]", {1, 2}), ("layers[:1]", {0}),
                                           ("layers[-1:]", {2}), ("layers[0:3]", {0, 1, 2})])
def test_layer_slices(group, layers):
    got = {int(n.split(".")[2]) for n in names(gpt2(), [group])}
    assert got == layers


@pytest.mark.parametrize("cls, config", [(LlamaForCausalLM, LlamaConfig),
                                         (Qwen2ForCausalLM, Qwen2Config)])
def test_llama_and_qwen2_groups(cls, config):
    m = llama(cls, config)
    attn = names(m, ["attention"])
    assert {n.split(".")[4] for n in attn} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert {n.split(".")[4] for n in names(m, ["mlp"])} == {"gate_proj", "up_proj", "down_proj"}
    assert names(m, ["embeddings"]) == ["model.embed_tokens.weight"]
    assert names(m, ["lm_head"]) == ["lm_head.weight"]
    assert "model.norm.weight" in names(m, ["norms"])
    assert all(n.startswith("model.layers.2.") for n in names(m, ["layers[2:]"]))


def test_prefixed_names_still_match():
    m = gpt2()
    prefixed = ["base_model.model." + n for n, _ in m.named_parameters()]
    assert len(select(m, ["attention"], prefixed)) == 12


def test_regex_group_and_union():
    m = gpt2()
    got = names(m, ["regex:c_fc", "embeddings"])
    assert len(got) == 3 * 2 + 2


@pytest.mark.parametrize("group, match", [("attn", "unknown parameter group"),
                                          ("regex:nothing_here", "matches nothing"),
                                          ("regex:(", "bad regex")])
def test_bad_groups(group, match):
    with pytest.raises(ConfigError, match=match):
        names(gpt2(), [group])


def test_unmapped_architecture_needs_regex():
    m = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="regex"):
        names(m, ["attention"])
    assert names(m, ["regex:weight"]) == ["0.weight"]
