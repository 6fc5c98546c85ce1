"""Greedy and sampled answers for a batch of prompts from one shared prefill.

Each prompt is encoded once and answered by ``1 + n_samples`` rows (row 0
greedy, the others sampled at temperature τ with top-k), and all rows decode together. Rows
stop at EOS or at a token that contains a newline (few-shot prompts continue with the next
question otherwise). The model runs once per distinct token history, not once per row: the
rows of a prompt share their history (and its cache row) for as long as they draw the same
tokens, as most samples at a low temperature do, and a row that stopped leaves the batch.
Answers are a few tokens and the longest of a few hundred rows is often the limit, so most
decoding steps would otherwise run rows that repeat another or are done.

Prompts that share a few-shot prefix (a probe's exemplars, the same for every fact of a
relation) can pass it apart: the prefix is encoded once per ``PrefixCache`` and only each
prompt's own question is run, attending to the prefix's keys and values. With a 4-shot prefix
of ~100 tokens and questions of ~15, that is most of a probe's compute. Where the model's
attention allows (``lm.shared_prefix``), every row reads the one copy of the prefix's keys and
values; otherwise each row gets its own copy. ``generate`` has no such batch-shared prefix,
hence the hand-written decoding loop.
"""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict

import torch

from halluc_cl.facts.padding import left_pad
from halluc_cl.lm.modes import eval_mode, left_pad_positions, returned_cache, with_cache
from halluc_cl.lm.shared_prefix import SharedPrefix, shared_prefix_attention

# model classes whose attention ignored the shared prefix once: they get per-row copies
_NO_SHARING: set[type] = set()


@functools.lru_cache(maxsize=8)
def _newline_ids(tokenizer) -> frozenset[int]:
    vocab = tokenizer.get_vocab()
    return frozenset(i for tok, i in vocab.items()
                     if "\n" in tokenizer.convert_tokens_to_string([tok]))


def _pick(logits: torch.Tensor, greedy: torch.Tensor, temperature: float, top_k: int,
          generator: torch.Generator | None, sampled_live: torch.Tensor,
          n_sampled: int) -> torch.Tensor:
    """Argmax for ``greedy`` rows, top-k sampling at ``temperature`` for the others.

    Sampling draws among the ``top_k`` logits only (the same distribution as masking the
    rest to -inf, without a softmax and a draw over the whole vocabulary).

    ``logits`` holds the rows still decoding; ``sampled_live`` gives the places of its
    sampled rows among all ``n_sampled`` sampled rows of the call. The draw still
    covers all of them (finished rows with placeholder probabilities): ``multinomial`` for
    one sample takes one exponential variate per entry whatever the probabilities, so each
    live row's draw does not depend on which rows finished before it.
    """
    choice = logits.argmax(-1)
    if n_sampled:
        scaled = logits[~greedy].float() / temperature
        index = None
        if 0 < top_k < scaled.shape[-1]:
            scaled, index = scaled.topk(top_k, dim=-1)
        probs = torch.softmax(scaled, dim=-1).cpu()
        if len(sampled_live) < n_sampled:
            every = torch.full((n_sampled, probs.shape[-1]), 1.0 / probs.shape[-1])
            every[sampled_live.cpu()] = probs
            probs = every
        drawn = torch.multinomial(probs, 1, generator=generator)
        if len(sampled_live) < n_sampled:
            drawn = drawn[sampled_live.cpu()]
        drawn = drawn.to(choice.device)
        choice[~greedy] = (drawn if index is None else index.gather(1, drawn))[:, 0]
    return choice


class PrefixCache:
    """KV caches of shared prompt prefixes, each encoded once; ``get`` hands out a copy,
    ``shared`` the one copy every row reads.

    Args:
        model: The causal LM whose caches these are.
        max_entries: Prefixes kept (least recently used dropped first).
        share: Let every row read the one copy where the model's attention allows
            (``lm.shared_prefix``); ``False`` copies the prefix into every row (slower, the
            same answers; for comparison).
    """

    def __init__(self, model, max_entries: int = 64, share: bool = True) -> None:
        self.model, self.max_entries, self.share = model, max_entries, share
        self._caches: OrderedDict[tuple[int, ...], object] = OrderedDict()

    @torch.no_grad()
    def get(self, prefix: list[int]):
        """A fresh copy of ``prefix``'s KV cache (batch 1), encoding it on first use."""
        return copy.deepcopy(self._encoded(prefix))

    def shared(self, prefix: list[int]) -> SharedPrefix:
        """``prefix``'s keys and values, not copied (no call may change them)."""
        return SharedPrefix(self._encoded(prefix))

    @torch.no_grad()
    def _encoded(self, prefix: list[int]):
        key = tuple(prefix)
        if key not in self._caches:
            device = next(self.model.parameters()).device
            with eval_mode(self.model):
                out = self.model(input_ids=torch.tensor([prefix], device=device),
                                 use_cache=True)
            self._caches[key] = returned_cache(out)
            if len(self._caches) > self.max_entries:
                self._caches.popitem(last=False)
        self._caches.move_to_end(key)
        return self._caches[key]


@torch.no_grad()
def greedy_and_sampled(model, tokenizer, prompts: list[list[int]], n_samples: int,
                       temperature: float = 0.5, top_k: int = 40, max_new_tokens: int = 16,
                       generator: torch.Generator | None = None,
                       prefix: list[int] | None = None,
                       prefixes: PrefixCache | None = None) -> list[list[str]]:
    """Answers of every prompt: ``[greedy, sample_1, ..., sample_n]`` per prompt.

    Args:
        model: A causal LM (put in eval mode for the call).
        tokenizer: Its tokenizer (``pad_token_id`` and ``eos_token_id`` set).
        prompts: Token ids of each prompt (after ``prefix``, if one is given).
        n_samples: Sampled answers per prompt (0 = greedy only).
        temperature: Sampling temperature τ (> 0).
        top_k: Sample among the k most likely tokens (0 = all).
        max_new_tokens: Answer length limit.
        generator: Random generator of the sampling (CPU), for reproducible samples.
        prefix: Token ids that come before every prompt, encoded once.
        prefixes: Where ``prefix``'s encoding is kept between calls (default: encoded anew).
    """
    decode = functools.partial(_decode, model, tokenizer, prompts, n_samples, temperature,
                               top_k, max_new_tokens, generator)
    with eval_mode(model):
        if not prefix:
            return decode(None, 0)
        prefixes = prefixes or PrefixCache(model)
        if prefixes.share and type(model) not in _NO_SHARING:
            with shared_prefix_attention(model) as can_share:
                got = decode(prefixes.shared(prefix), len(prefix)) if can_share else None
            if got is not None:
                return got
            if can_share:  # its attention ignored the prefix
                _NO_SHARING.add(type(model))
        return decode(prefixes.get(prefix), len(prefix))


def _decode(model, tokenizer, prompts, n_samples, temperature, top_k, max_new_tokens,
            generator, prefix, n_prefix: int) -> list[list[str]] | None:
    """The answers; ``prefix`` is a ``SharedPrefix`` (read by every row), a KV cache (copied
    per row) or ``None``. ``None`` comes back where the model's attention ignored a
    ``SharedPrefix``, before any token is drawn."""
    device = next(model.parameters()).device
    rows = 1 + n_samples
    ids, mask = left_pad(prompts, tokenizer.pad_token_id)
    ids, mask = ids.to(device), mask.to(device)
    positions = left_pad_positions(mask) + n_prefix
    extra, cache = {}, None
    if isinstance(prefix, SharedPrefix):  # the rows' caches and mask hold their own tokens
        extra = {"shared_prefix": prefix}
    elif prefix is not None:  # the prefix's keys and values, one copy per prompt
        cache = prefix
        cache.batch_repeat_interleave(len(prompts))
        mask = torch.cat([torch.ones_like(mask[:, :1]).expand(-1, n_prefix), mask], dim=1)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                use_cache=True, logits_to_keep=1, **with_cache(model, cache), **extra)
    if extra and prefix.calls != len(prefix.kv):
        return None
    # A "state" is one distinct token history: a row of the cache, the mask and the logits.
    # Rows of a prompt start in its one state and share one for as long as they draw the
    # same tokens, so the model runs once per state, not once per row.
    cache, logits = returned_cache(out), out.logits[:, -1]
    next_pos = positions[:, -1:] + 1
    n_rows = len(prompts) * rows
    row_ids = torch.arange(n_rows, device=device)
    greedy = row_ids % rows == 0
    n_sampled = int((~greedy).sum())
    sampled_place = torch.cumsum(~greedy, 0) - 1  # each sampled row's place among them
    stop = torch.tensor(sorted(_newline_ids(tokenizer) | {tokenizer.eos_token_id}),
                        device=device)
    live, state = row_ids, row_ids // rows  # the rows still decoding, and their states
    tokens: list[torch.Tensor] = []
    for step in range(max_new_tokens):
        live_greedy = greedy[live]
        choice = _pick(logits[state], live_greedy, temperature, top_k, generator,
                       sampled_place[live][~live_greedy], n_sampled)
        every = torch.full((n_rows,), tokenizer.pad_token_id, dtype=choice.dtype,
                           device=device)
        tokens.append(every.index_put_((live,), choice))
        going = ~torch.isin(choice, stop)
        if not going.any() or step == max_new_tokens - 1:
            break
        live, state, choice = live[going], state[going], choice[going]
        vocab = logits.shape[-1]
        history, state = torch.unique(state * vocab + choice, return_inverse=True)
        parent, token = history // vocab, history % vocab
        if not torch.equal(parent, row_ids[:len(mask)]):  # some state split or ended
            cache.batch_select_indices(parent)
            mask, next_pos = mask[parent], next_pos[parent]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = model(input_ids=token[:, None], attention_mask=mask, position_ids=next_pos,
                    use_cache=True, **with_cache(model, cache), **extra)
        cache, logits, next_pos = returned_cache(out), out.logits[:, -1], next_pos + 1
    generated = torch.stack(tokens, dim=1).tolist()
    stop_set = set(stop.tolist())
    texts = []
    for row in generated:
        cut = next((i for i, t in enumerate(row) if t in stop_set), len(row))
        texts.append(tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    return [texts[i:i + rows] for i in range(0, len(texts), rows)]
