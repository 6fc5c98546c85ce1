"""One-forward exact match agrees with real greedy generation on every fact of the tiny world."""

from __future__ import annotations

import torch

from halluc_cl.data.datamodule import FactDataModule
from halluc_cl.lm.loading import load_causal_lm
from halluc_cl.synthetic.resolve import resolve
from halluc_cl.train.evaluation import answer_batch
from halluc_cl.train.forward_match import greedy_produces, stop_token_ids

TINY = "synthetic://tiny"


def _all_facts_module() -> FactDataModule:
    # every Known fact is held out and every Unknown one trained: all 384 facts are evaluated
    dm = FactDataModule(TINY, TINY, unknown_fraction=1.0, n_train=192, n_heldout=192,
                        n_heldout_val=0,
                        known_categories=["HighlyKnown", "MaybeKnown", "WeaklyKnown"],
                        warmup_epochs=0, eval_batch_size=64)
    dm.load()
    return dm


def _compare(model, dm) -> tuple[int, int]:
    n = agree = 0
    for split in dm.eval_split_names():
        for batch in dm.evaluation.loader(split):
            gen = answer_batch(model, dm.tokenizer, batch, 8, "generate")
            fwd = answer_batch(model, dm.tokenizer, batch, 8, "forward", want_text=False)
            # hybrid: generate's numbers and texts, whatever the forward decided first
            assert answer_batch(model, dm.tokenizer, batch, 8, "hybrid")[1:] == gen[1:]
            assert fwd[1] == gen[1], split  # exact match, fact by fact
            assert fwd[2] == gen[2]
            # a matched fact's prediction is the alias the generation produced
            assert all(f == g for f, g, c in zip(fwd[0], gen[0], fwd[1]) if c)
            n += len(gen[1])
            agree += sum(gen[1])
    return n, agree


def test_forward_match_agrees_with_generation_on_every_fact(tiny_model_dir, one_thread):
    dm = _all_facts_module()
    model = load_causal_lm(resolve(TINY))
    n, right = _compare(model, dm)
    assert n == 384 and 0 < right < n
    # and after perturbing the weights, where many answers are wrong in varied ways
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    n, right = _compare(model, dm)
    assert 0 < right < n


def test_forward_match_agrees_with_generation_after_fine_tuning(tiny_model_dir, one_thread):
    """SFT on the Unknown facts (until some are learned and some Known ones forgotten): the
    regime every table scores, where answers are new tokens, old ones and abstentions."""
    dm = _all_facts_module()
    model = load_causal_lm(resolve(TINY)).train()
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rows = [dict(r, unknown=True) for r in dm.encoded("unknown_train")]
    for step in range(24):
        batch = dm.collate_train(rows[(step * 16) % len(rows):][:16])
        loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     labels=batch["labels"]).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()
    n, right = _compare(model, dm)
    assert n == 384 and 0 < right < n
    learned = sum(answer_batch(model, dm.tokenizer, b, 8, "forward", want_text=False)[1].count(True)
                  for b in dm.evaluation.loader("unknown_train"))
    assert learned > 0  # the fine-tuning taught new answers, so the check covers them


def test_hybrid_generates_only_the_facts_no_spelling_matches(tiny_model_dir, one_thread,
                                                            monkeypatch):
    from halluc_cl.train import evaluation

    dm = _all_facts_module()
    model = load_causal_lm(resolve(TINY))
    batch = next(iter(dm.evaluation.loader("heldout_test")))
    generated: list[int] = []
    real = evaluation.greedy_answers

    def counting(model, tokenizer, ids, mask, max_new_tokens):
        generated.append(len(ids))
        return real(model, tokenizer, ids, mask, max_new_tokens)

    monkeypatch.setattr(evaluation, "greedy_answers", counting)
    _, correct, _ = answer_batch(model, dm.tokenizer, batch, 8, "hybrid")
    assert 0 < sum(correct) < len(correct)
    assert generated == [correct.count(False)]  # the right answers came from the forward


def test_stop_condition_and_length_limit(tiny_model_dir, one_thread):
    dm = _all_facts_module()
    model = load_causal_lm(resolve(TINY))
    batch = next(iter(dm.evaluation.loader("heldout_test")))
    _, correct, _ = answer_batch(model, dm.tokenizer, batch, 8, "generate")
    k = correct.index(True)  # a fact greedy decoding answers right
    prompt, gold = batch["prompt_ids"][k], batch["candidates"][k][0]
    eos = dm.tokenizer.eos_token_id
    assert eos in stop_token_ids(dm.tokenizer).tolist()
    # the known answer; the answer plus an extra token (greedy stops first); a prefix of it
    # (greedy goes on); the answer under a limit shorter than it (cut) or equal to it (no stop)
    cands = [[gold, gold + [gold[-1]], gold[:-1] or [eos]]]
    assert greedy_produces(model, dm.tokenizer, [prompt], cands, 8)[0] == [True, False, False]
    assert greedy_produces(model, dm.tokenizer, [prompt], [[gold]], len(gold) - 1) == [[False]]
    assert greedy_produces(model, dm.tokenizer, [prompt], [[gold]], len(gold)) == [[True]]


def test_partitioned_models_evaluate_by_synced_generation(tiny_model_dir, one_thread,
                                                          monkeypatch):
    """Under ZeRO-3 (parameters marked ``ds_id``) evaluation generates with synced_gpus."""
    from halluc_cl.train import evaluation

    dm = _all_facts_module()
    model = load_causal_lm(resolve(TINY))
    batch = next(iter(dm.evaluation.loader("heldout_test")))
    calls = []

    def fake_answers(model, tokenizer, input_ids, attention_mask, max_new_tokens):
        calls.append(len(input_ids))
        return [""] * len(input_ids)

    monkeypatch.setattr(evaluation, "greedy_answers", fake_answers)
    evaluation.answer_batch(model, dm.tokenizer, batch, 8, "forward", want_text=False)
    assert calls == []  # unpartitioned: the forward check, no generation
    for p in model.parameters():
        p.ds_id = 0
    evaluation.answer_batch(model, dm.tokenizer, batch, 8, "forward", want_text=False)
    assert calls == [len(batch["facts"])]
