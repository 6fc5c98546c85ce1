"""Attention to a batch-shared prefix: the same numbers as attention over a per-row copy."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from transformers import Gemma2Config, LlamaConfig, LlamaForCausalLM, MistralConfig

from halluc_cl.lm.modes import returned_cache, with_cache
from halluc_cl.lm.shared_prefix import ATTENTION, SharedPrefix, _attend, shared_prefix_attention


class _Layer:
    layer_idx = 0


def _reference(query, prefix_k, prefix_v, key, value, own_mask):
    """SDPA over [prefix; own] keys, the prefix copied into every row and kv heads repeated."""
    b, h = query.shape[:2]
    g = h // key.shape[1]
    keys = torch.cat([prefix_k.expand(b, -1, -1, -1), key], dim=2).repeat_interleave(g, dim=1)
    values = torch.cat([prefix_v.expand(b, -1, -1, -1), value], dim=2).repeat_interleave(g, 1)
    ones = torch.ones(*own_mask.shape[:-1], prefix_k.shape[2], dtype=torch.bool)
    mask = torch.cat([ones, own_mask], dim=-1)
    return F.scaled_dot_product_attention(query, keys, values, attn_mask=mask).transpose(1, 2)


@pytest.mark.parametrize("lq", [1, 4])
def test_attention_over_a_shared_prefix_equals_attention_over_copies(lq):
    torch.manual_seed(0)
    b, h, hkv, d, p, s = 3, 6, 2, 8, 5, 4
    query = torch.randn(b, h, lq, d)
    key, value = torch.randn(b, hkv, s, d), torch.randn(b, hkv, s, d)
    prefix_k, prefix_v = torch.randn(1, hkv, p, d), torch.randn(1, hkv, p, d)
    # causal over the rows' own keys, row 1 left-padded by two
    own = torch.ones(lq, s, dtype=torch.bool).tril(s - lq).expand(b, 1, lq, s).clone()
    own[1, :, :, :2] = False
    layer = types.SimpleNamespace(keys=prefix_k, values=prefix_v)
    shared = SharedPrefix(types.SimpleNamespace(layers=[layer]))
    out, _ = _attend(_Layer(), query, key, value, own, scaling=d ** -0.5, shared_prefix=shared)
    torch.testing.assert_close(out, _reference(query, prefix_k, prefix_v, key, value, own))
    assert shared.calls == 1
    if lq > 1:  # no mask (sdpa's format leaves it out when nothing is padded): causal
        causal = torch.ones(lq, s, dtype=torch.bool).tril(s - lq).expand(b, 1, lq, s)
        out, _ = _attend(_Layer(), query, key, value, None, shared_prefix=shared)
        torch.testing.assert_close(out, _reference(query, prefix_k, prefix_v, key, value, causal))


def test_a_llama_reads_the_prefix_once_and_gives_the_whole_prompts_logits():
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64)
    model = LlamaForCausalLM(config).eval()
    prefix = torch.randint(3, 50, (1, 7))
    rows = torch.randint(3, 50, (3, 5))
    with torch.no_grad():
        whole = model(input_ids=torch.cat([prefix.expand(3, -1), rows], dim=1)).logits[:, 7:]
        shared = SharedPrefix(returned_cache(model(input_ids=prefix, use_cache=True)))
        with shared_prefix_attention(model) as on:
            assert on and model.config._attn_implementation == ATTENTION
            out = model(input_ids=rows[:, :3], position_ids=torch.arange(7, 10)[None],
                        use_cache=True, shared_prefix=shared)
            step = model(input_ids=rows[:, 3:], position_ids=torch.arange(10, 12)[None],
                         use_cache=True, shared_prefix=shared,
                         **with_cache(model, returned_cache(out)))
        assert model.config._attn_implementation != ATTENTION  # restored
    assert shared.calls == 2 * config.num_hidden_layers
    torch.testing.assert_close(torch.cat([out.logits, step.logits], dim=1), whole,
                               atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("config, shares", [
    (LlamaConfig(), True),
    (MistralConfig(sliding_window=4096), False),  # a window the prefix could fall out of
    (Gemma2Config(), False),  # sliding layers and soft-capped scores
])
def test_only_plain_causal_attention_is_switched(config, shares):
    config._attn_implementation = "sdpa"
    model = types.SimpleNamespace(config=config)
    with shared_prefix_attention(model) as on:
        assert on is shares
        assert (config._attn_implementation == ATTENTION) is shares
    assert config._attn_implementation == "sdpa"
