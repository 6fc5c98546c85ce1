"""SliCK probing: categories from hand-made answers, leak-free few-shot prompts, batched
sampling that agrees with ``generate``, and resumption."""

from __future__ import annotations

import json
import os
import random
import stat
import warnings

import pytest
import torch

from halluc_cl.errors import ConfigError, WriteError
from halluc_cl.facts.prompts import PromptFormat
from halluc_cl.facts.schema import Fact, read_facts
from halluc_cl.probing.slick import (
    SliCKProbe,
    categorize,
    choose_exemplars,
    fact_prompt_parts,
    fact_prompts,
    read_partial,
)
from halluc_cl.synthetic.resolve import resolve

T, F = True, False


@pytest.mark.parametrize("greedy, sampled, category", [
    ([T, T, T], [F, F], "HighlyKnown"),
    ([T, F, T], [F, F], "MaybeKnown"),
    ([F, F, T], [T, T], "MaybeKnown"),
    ([F, F, F], [F, T, F], "WeaklyKnown"),
    ([F, F, F], [F, F, F], "Unknown"),
    ([F], [], "Unknown"),
    ([T], [], "HighlyKnown"),
])
def test_categories_from_hand_made_answer_sets(greedy, sampled, category):
    assert categorize(greedy, sampled) == category


def _fact(i: int, relation: str = "r", subject: str | None = None) -> Fact:
    return Fact(id=f"f{i}", subject=subject or f"S{i}", relation=relation, object=f"O{i}",
                question=f"Q about S{i}?")


def test_few_shot_prompts_never_include_the_probed_fact_or_subject():
    pool_facts = [_fact(i) for i in range(8)] + [_fact(100, subject="S3")] + \
        [_fact(200 + i, relation="other") for i in range(5)]
    pool: dict[str, list[Fact]] = {}
    for f in pool_facts:
        pool.setdefault(f.relation, []).append(f)
    target = pool_facts[3]
    for j in range(30):
        shots = choose_exemplars(target, pool, 4, random.Random(j))
        assert len(shots) == 4
        assert all(s.relation == "r" and s.subject != "S3" and s.id != "f3" for s in shots)
    prompts = fact_prompts(target, pool, n_prompts=5, k=4, seed=0, fmt=PromptFormat())
    assert len(set(prompts)) > 1  # prompts differ by their exemplars
    assert all(p.count(target.question) == 1 and p.endswith(PromptFormat().prompt(
        target.question)) for p in prompts)
    assert all("O3" not in p for p in prompts)
    with pytest.raises(ConfigError, match="exemplars"):
        choose_exemplars(target, pool, 8, random.Random(0))


def test_shared_exemplars_are_one_prefix_per_prompt_and_relation():
    pool: dict[str, list[Fact]] = {"r": [_fact(i) for i in range(6)]}
    a, b = _fact(50), _fact(51)
    fmt = PromptFormat()
    pa = fact_prompt_parts(a, pool, 3, 2, seed=0, fmt=fmt, shared=True)
    pb = fact_prompt_parts(b, pool, 3, 2, seed=0, fmt=fmt, shared=True)
    assert [x for x, _ in pa] == [x for x, _ in pb]  # prompt j: the same exemplars
    assert len({x for x, _ in pa}) == 3
    assert all(q == fmt.prompt(a.question) for _, q in pa)
    # a fact whose subject is drawn gets its own exemplars for that prompt
    for j in range(3):
        holder = next(f for f in pool["r"] if f.question in pa[j][0])
        clash = _fact(99, subject=holder.subject)
        own = fact_prompt_parts(clash, pool, 3, 2, seed=0, fmt=fmt, shared=True)[j][0]
        assert holder.question not in own and own != pa[j][0]
    assert fact_prompts(a, pool, 3, 2, 0, fmt, shared=True) == [x + q for x, q in pa]


@pytest.fixture
def tiny(tiny_model_dir):
    from halluc_cl.lm.loading import load_causal_lm, load_tokenizer

    torch.set_num_threads(1)
    facts = read_facts(tiny_model_dir / "facts.jsonl")
    spec = resolve("synthetic://tiny")
    return load_causal_lm(spec), load_tokenizer(spec), facts


def test_greedy_rows_agree_with_generate(tiny):
    from halluc_cl.lm.generation import answer_prompts
    from halluc_cl.probing.sampling import greedy_and_sampled

    model, tok, facts = tiny
    prompts = [PromptFormat().prompt(f.question) for f in facts[:48]]
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    out = greedy_and_sampled(model, tok, ids, n_samples=3, max_new_tokens=8,
                             generator=torch.Generator().manual_seed(0))
    assert [o[0] for o in out] == answer_prompts(model, tok, prompts, max_new_tokens=8)
    assert all(len(o) == 4 for o in out)


def _few_shot(tok, facts, n: int):
    """A 3-shot prefix and ``n`` questions after it: (prefix, prompts, their token ids)."""
    fmt = PromptFormat()
    prefix = "".join(fmt.prompt(f.question) + fmt.target(f.object) + "\n\n" for f in facts[:3])
    prompts = [fmt.prompt(f.question) for f in facts[10:10 + n]]
    return (prefix, prompts, tok(prefix, add_special_tokens=False)["input_ids"],
            [tok(p, add_special_tokens=False)["input_ids"] for p in prompts])


def test_a_shared_prefix_gives_the_answers_of_whole_prompts(tiny):
    from halluc_cl.lm.generation import answer_prompts
    from halluc_cl.probing import sampling
    from halluc_cl.probing.sampling import PrefixCache, greedy_and_sampled

    model, tok, facts = tiny
    prefix, prompts, head, tails = _few_shot(tok, facts, 30)
    assert all(tok(prefix + p, add_special_tokens=False)["input_ids"] == head + t
               for p, t in zip(prompts, tails))  # this word-level tokenizer cuts at the seam
    cache = PrefixCache(model)
    assert type(model) not in sampling._NO_SHARING  # every row reads one copy of the prefix
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = greedy_and_sampled(model, tok, tails, n_samples=2, max_new_tokens=8,
                                 generator=torch.Generator().manual_seed(0), prefix=head,
                                 prefixes=cache)
    # the cache goes in under the name this transformers takes (the old one goes in 5.40)
    assert not [w for w in caught if "past_key_values" in str(w.message)]
    whole = answer_prompts(model, tok, [prefix + p for p in prompts], max_new_tokens=8)
    assert [o[0] for o in out] == whole
    assert len(cache._caches) == 1
    again = greedy_and_sampled(model, tok, tails[:5], n_samples=0, max_new_tokens=8,
                               prefix=head, prefixes=cache)
    assert [a[0] for a in again] == whole[:5] and len(cache._caches) == 1
    assert type(model) not in sampling._NO_SHARING
    # a copy of the prefix per row: the same greedy and sampled answers
    copies = greedy_and_sampled(model, tok, tails, n_samples=2, max_new_tokens=8,
                                generator=torch.Generator().manual_seed(0), prefix=head,
                                prefixes=PrefixCache(model, share=False))
    assert copies == out


def test_a_model_that_ignores_the_shared_prefix_gets_copies(tiny, monkeypatch):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import AttentionInterface

    from halluc_cl.lm.generation import answer_prompts
    from halluc_cl.lm.shared_prefix import ATTENTION
    from halluc_cl.probing import sampling

    def ignores_it(module, q, k, v, mask, shared_prefix=None, **kwargs):
        return sdpa_attention_forward(module, q, k, v, mask, **kwargs)

    monkeypatch.setitem(AttentionInterface._global_mapping, ATTENTION, ignores_it)
    monkeypatch.setattr(sampling, "_NO_SHARING", set())
    model, tok, facts = tiny
    prefix, prompts, head, tails = _few_shot(tok, facts, 10)
    out = sampling.greedy_and_sampled(model, tok, tails, n_samples=0, max_new_tokens=8,
                                      prefix=head)
    assert [o[0] for o in out] == answer_prompts(model, tok, [prefix + p for p in prompts],
                                                 max_new_tokens=8)
    assert type(model) in sampling._NO_SHARING


def test_probe_cuts_prompts_where_the_tokens_of_the_whole_prompt_agree(tiny):
    model, tok, facts = tiny
    probe = SliCKProbe(model, tok, facts[:20], n_prompts=2, k_shot=2, n_samples=1)
    for fact in facts[30:40]:
        for prefix, question in fact_prompt_parts(fact, probe.pool, 2, 2, 0, probe.fmt, True):
            head, rest = probe._encode(prefix, question)
            assert list(head) + rest == tok(prefix + question, add_special_tokens=False)[
                "input_ids"]
            assert len(head) > 0


def _probe(tiny, k_shot: int = 1) -> SliCKProbe:
    model, tok, facts = tiny
    exemplars = [f for f in facts if f.category == "HighlyKnown"][:40]
    return SliCKProbe(model, tok, exemplars, n_prompts=2, k_shot=k_shot, n_samples=2,
                      max_new_tokens=6)


def test_probe_categorises_known_and_new_facts(tiny, tmp_path):
    _, _, facts = tiny
    known = [f for f in facts if f.category == "HighlyKnown"][40:46]
    new = [f for f in facts if f.category == "Unknown"][:6]
    # the tiny model was pretrained on zero-shot prompts only
    stats = _probe(tiny, k_shot=0).run(known + new, tmp_path / "p.jsonl")
    probed = {f.id: f for f in read_facts(tmp_path / "p.jsonl")}
    assert len(probed) == 12 and stats["facts"] == 12
    assert sum(probed[f.id].category == "HighlyKnown" for f in known) >= 4
    assert sum(probed[f.id].category in ("Unknown", "WeaklyKnown") for f in new) >= 4
    assert all(0.0 <= f.p_correct <= 1.0 for f in probed.values())
    assert not (tmp_path / "p.jsonl.partial.jsonl").exists()
    assert json.loads((tmp_path / "p.jsonl.stats.json").read_text())["facts"] == 12


def test_interrupted_probe_resumes_and_keeps_finished_facts(tiny, tmp_path, monkeypatch):
    _, _, facts = tiny
    todo = facts[60:72]
    full = tmp_path / "full.jsonl"
    _probe(tiny).run(todo, full, facts_per_batch=4)

    probe = _probe(tiny)
    calls: list[list[str]] = []
    real = probe.probe_batch
    kill_at = [2]  # the 2nd batch of the first run dies

    def interrupted(batch):
        calls.append([f.id for f in batch])
        if len(calls) == kill_at[0]:
            raise RuntimeError("interrupted")
        return real(batch)

    monkeypatch.setattr(probe, "probe_batch", interrupted)
    out = tmp_path / "resumed.jsonl"
    with pytest.raises(RuntimeError, match="interrupted"):
        probe.run(todo, out, facts_per_batch=4)
    assert not out.exists()  # the result file only appears complete
    assert len((tmp_path / "resumed.jsonl.partial.jsonl").read_text().splitlines()) == 4

    calls.clear()
    kill_at[0] = 0
    probe.run(todo, out, facts_per_batch=4)
    assert [i for c in calls for i in c] == [f.id for f in todo[4:]]  # first batch kept
    assert out.read_text() == full.read_text()  # same answers as an uninterrupted probe


def test_partial_file_torn_inside_a_utf8_character(tmp_path):
    """A probe killed mid-write can cut the last line inside a multi-byte character: that
    line is probed again, the finished ones are kept."""
    done = Fact("f1", "Beyoncé", "r", "Jay-Z", "Who is Beyoncé married to?", category="Unknown")
    torn = json.dumps(_fact(2).to_dict(), ensure_ascii=False).replace("O2", "Café").encode()
    path = tmp_path / "out.jsonl.partial.jsonl"
    path.write_bytes(json.dumps(done.to_dict(), ensure_ascii=False).encode() + b"\n"
                     + torn[:torn.index("é".encode()) + 1])
    assert read_partial(path) == {"f1": done}


@pytest.mark.skipif(not os.path.exists("/dev/full")
                    or not stat.S_ISCHR(os.stat("/dev/full").st_mode), reason="needs /dev/full")
def test_full_disk_while_probing_names_the_partial_file(tmp_path, monkeypatch):
    """The partial file is appended to after every batch; on a full disk (here the file is
    /dev/full) that is one error naming it, and no result file appears."""
    probe = SliCKProbe(None, None, exemplars=[])
    monkeypatch.setattr(probe, "probe_batch", lambda batch: [
        Fact(**{**f.to_dict(), "category": "Unknown", "p_correct": 0.0}) for f in batch])
    out = tmp_path / "p.jsonl"
    partial = tmp_path / "p.jsonl.partial.jsonl"
    partial.symlink_to("/dev/full")
    with pytest.raises(WriteError, match=rf"^cannot write {partial}: No space left on device"):
        probe.run([_fact(i) for i in range(4)], out, facts_per_batch=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.jsonl.partial.jsonl"]
