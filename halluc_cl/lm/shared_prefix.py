"""Attention to one shared prefix from every row of a batch, without a copy per row.

A probe asks many questions after the same few-shot prefix. A ``DynamicCache`` holds keys and
values per row, so a batch of B rows keeps B copies of the prefix's, and every decoding step
concatenates them anew (by arithmetic, for SmolLM2-135M with 320 rows and a 100-token prefix:
30 layers × 320 × 2 × 3 kv heads × 100 × 64 × 4 bytes ≈ 1.5 GB copied per token, about 2.7×
its fp32 weights). Here the prefix's keys and values
stay batch-1 (``SharedPrefix``); each row's cache holds only its own tokens, and the
attention of a call merges the two parts in one softmax: the rows' own keys under the usual
causal/padding mask, and the prefix's, which every query sees in full (cascade attention).

transformers has no such attention, so this one is registered under ``ATTENTION`` in its
``AttentionInterface`` (with the ``sdpa`` mask format) and switched on for a call by
``shared_prefix_attention``, for models whose every layer attends causally to all earlier
tokens (no sliding window or soft-capping). Models whose attention does not go through that
interface are detected (``SharedPrefix.calls``) and keep the per-row copies.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

ATTENTION = "halluc_cl_shared_prefix"


class SharedPrefix:
    """The keys and values of one prefix, per layer, batch 1 (positions ``0, 1, …``).

    Args:
        cache: The ``DynamicCache`` a forward of the prefix alone returned.
    """

    def __init__(self, cache) -> None:
        layers = getattr(cache, "layers", None)
        if layers is not None:
            self.kv = [(layer.keys, layer.values) for layer in layers]
        else:  # transformers < 4.56
            self.kv = list(zip(cache.key_cache, cache.value_cache))
        self.calls = 0  # attention calls that used it (one per layer and forward)


def _attend(module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
            attention_mask: torch.Tensor | None, dropout: float = 0.0,
            scaling: float | None = None, shared_prefix: SharedPrefix | None = None,
            **kwargs) -> tuple[torch.Tensor, None]:
    """Attention of ``query`` ([B, H, Lq, D]) over the shared prefix and the rows' own
    ``key``/``value`` ([B, Hkv, S, D]); returns ``[B, Lq, H, D]`` as transformers' own do."""
    if shared_prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    shared_prefix.calls += 1
    prefix_k, prefix_v = shared_prefix.kv[module.layer_idx]
    b, h, lq, d = query.shape
    hkv, s = key.shape[1], key.shape[2]
    g = h // hkv  # query heads per key/value head (head i reads kv head i // g)
    scale = d ** -0.5 if scaling is None else scaling
    q = query.reshape(b, hkv, g, lq, d)
    # the prefix: one matmul per kv head over every row's queries
    q_rows = q.permute(1, 0, 2, 3, 4).reshape(hkv, b * g * lq, d)
    own = torch.matmul(q, key[:, :, None].transpose(-1, -2)) * scale  # [b, hkv, g, lq, s]
    if attention_mask is None:  # sdpa's format left it out: causal (or one query)
        if lq > 1:
            causal = torch.ones(lq, s, dtype=torch.bool, device=query.device).tril(s - lq)
            own = own.masked_fill(~causal, float("-inf"))
    elif attention_mask.dtype == torch.bool:
        own = own.masked_fill(~attention_mask[:, :, None], float("-inf"))
    else:
        own = own + attention_mask[:, :, None]
    shared = torch.matmul(q_rows, prefix_k[0].transpose(-1, -2)) * scale  # [hkv, b*g*lq, P]
    shared = shared.reshape(hkv, b, g, lq, -1).permute(1, 0, 2, 3, 4)
    probs = torch.softmax(torch.cat([shared, own], dim=-1).float(), dim=-1).to(query.dtype)
    p_shared, p_own = probs.split([shared.shape[-1], s], dim=-1)
    out = torch.matmul(p_own, value[:, :, None])  # [b, hkv, g, lq, d]
    p_rows = p_shared.permute(1, 0, 2, 3, 4).reshape(hkv, b * g * lq, -1)
    out = out + torch.matmul(p_rows, prefix_v[0]).reshape(hkv, b, g, lq, d).permute(1, 0, 2, 3, 4)
    return out.reshape(b, h, lq, d).transpose(1, 2).contiguous(), None


def _register() -> bool:
    try:
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
        from transformers.modeling_utils import AttentionInterface
    except ImportError:  # transformers without an attention registry
        return False
    AttentionInterface.register(ATTENTION, _attend)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)
    return True


REGISTERED = _register()


def _plain_causal(config) -> bool:
    """Whether every layer attends causally to all earlier tokens with plain scaled scores:
    no sliding window, no logit soft-capping, no encoder-decoder (what ``_attend`` computes)."""
    sliding = getattr(config, "sliding_window", None) and \
        getattr(config, "use_sliding_window", True)
    layer_types = set(getattr(config, "layer_types", None) or ["full_attention"])
    return not (sliding or getattr(config, "attn_logit_softcapping", None)
                or getattr(config, "is_encoder_decoder", False)
                or layer_types != {"full_attention"})


@contextmanager
def shared_prefix_attention(model: torch.nn.Module) -> Iterator[bool]:
    """Route ``model``'s attention through ``_attend`` for the block; yields whether it could.

    A forward inside the block that passes ``shared_prefix=SharedPrefix(...)`` attends to
    that prefix before its own tokens; one without it runs plain ``sdpa``.
    """
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    if not REGISTERED or before not in ("sdpa", "eager") or not _plain_causal(config):
        yield False
        return
    config._attn_implementation = ATTENTION
    try:
        yield True
    finally:
        config._attn_implementation = before
