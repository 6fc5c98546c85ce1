"""Answers of one evaluation batch: one-forward exact match, or greedy generation.

``forward`` (the default) decides exact match with one teacher-forced forward pass over every
alias and every abstention phrase (``forward_match.greedy_produces``); a fact that matches
none is generated only when its prediction text is wanted (run folders save predictions).
``generate`` decodes every answer greedily and matches the text (``facts/matching.py``), which
also accepts answers that differ from an alias only by case, punctuation or articles.
``hybrid`` gives ``generate``'s numbers at a fraction of its cost on a model that is mostly
right: one forward finds the facts whose greedy answer is an alias as written (``generate``
would accept it too), and only the others are generated and matched as text, which accepts
case, punctuation and article variants. Checking variant spellings in the forward as well
would add a row per spelling for every fact, to spare generating the few answered that way.
"""

from __future__ import annotations

from typing import Literal

import torch

from halluc_cl.facts.matching import exact_match, is_abstention
from halluc_cl.facts.prompts import split_answer
from halluc_cl.lm.generation import greedy_answers
from halluc_cl.lm.zero import is_partitioned
from halluc_cl.train.forward_match import greedy_produces

EvalMethod = Literal["forward", "generate", "hybrid"]
EVAL_METHODS = ("forward", "generate", "hybrid")


def answer_batch(model, tokenizer, batch: dict, max_new_tokens: int, method: EvalMethod,
                 want_text: bool = True) -> tuple[list[str | None], list[bool], list[bool]]:
    """Predictions (``None`` where not computed), correctness and abstention of a batch.

    The batch holds left-padded ``input_ids``/``attention_mask``, ``facts``, and for the
    forward method ``prompt_ids``, ``abstain_phrases`` and ``candidates`` (each fact's aliases,
    then the abstention phrases, as answer-target token ids). With the forward method, exact
    match means greedy decoding yields an alias token for token; the text of facts that match
    no candidate is generated (when ``want_text``) for the prediction field only, so the
    metrics never depend on whether predictions are saved.
    """
    facts, suffix = batch["facts"], batch.get("answer_suffix", "")
    if suffix and method == "forward":
        method = "hybrid"  # an answer right but unformatted is right: generation decides it
    if is_partitioned(model):
        # ZeRO-3 gathers weights in every forward, a collective: the forward check's number of
        # passes depends on the rank's facts, synced generation's does not
        method = "generate"
    if method == "hybrid":
        return _hybrid(model, tokenizer, batch, max_new_tokens)
    if method == "generate":
        answers = greedy_answers(model, tokenizer, batch["input_ids"], batch["attention_mask"],
                                 max_new_tokens)
        content = [split_answer(a, suffix)[0] for a in answers]
        return (answers, [exact_match(c, f.aliases) for c, f in zip(content, facts)],
                [is_abstention(c) for c in content])
    phrases = batch["abstain_phrases"]
    n_alias = [len(f.aliases) for f in facts]
    first: list[int | None] = []
    produced = greedy_produces(model, tokenizer, batch["prompt_ids"],
                               [c[:n] for c, n in zip(batch["candidates"], n_alias)],
                               max_new_tokens, first_tokens=first)
    answers: list[str | None] = [
        next((a for a, hit in zip(f.aliases, hits) if hit), None)
        for f, hits in zip(facts, produced)]
    correct = [a is not None for a in answers]
    # abstention rows only for wrong facts whose greedy first token starts a phrase
    starts = {c[0] for cands, n in zip(batch["candidates"], n_alias) for c in cands[n:] if c}
    maybe = [i for i, a in enumerate(answers) if a is None and (first[i] is None or first[i] in starts)]
    abstained = [False] * len(facts)
    if maybe:
        hits = greedy_produces(model, tokenizer, [batch["prompt_ids"][i] for i in maybe],
                               [batch["candidates"][i][n_alias[i]:] for i in maybe],
                               max_new_tokens)
        for i, row in zip(maybe, hits):
            idk = next((p for p, hit in zip(phrases, row) if hit), None)
            answers[i], abstained[i] = idk, idk is not None
    missing = [i for i, a in enumerate(answers) if a is None]
    if want_text and missing:
        idx = torch.tensor(missing, device=batch["input_ids"].device)
        texts = greedy_answers(model, tokenizer, batch["input_ids"][idx],
                               batch["attention_mask"][idx], max_new_tokens)
        for i, text in zip(missing, texts):
            answers[i] = text  # the prediction's text only: the forward check decided
    return answers, correct, abstained


def _hybrid(model, tokenizer, batch: dict, max_new_tokens: int
            ) -> tuple[list[str | None], list[bool], list[bool]]:
    """``generate``'s answers, generating only the facts no accepted spelling matches."""
    suffix, unk = batch.get("answer_suffix", ""), tokenizer.unk_token_id
    # each alias as written (its target ids lead the batch's candidates); "<unk>" is no spelling
    forms = [[(a, ids) for a, ids in zip(f.aliases, cands) if unk is None or unk not in ids]
             for f, cands in zip(batch["facts"], batch["candidates"])]
    produced = greedy_produces(model, tokenizer, batch["prompt_ids"],
                               [[ids for _, ids in mine] for mine in forms], max_new_tokens)
    answers: list[str | None] = [  # a hit is the target: the alias, then the suffix
        next(((text + suffix).strip() for (text, _), hit in zip(mine, hits) if hit), None)
        for mine, hits in zip(forms, produced)]
    correct, abstained = [a is not None for a in answers], [False] * len(answers)
    aliases = [f.aliases for f in batch["facts"]]
    missing = [i for i, a in enumerate(answers) if a is None]
    if missing:
        idx = torch.tensor(missing, device=batch["input_ids"].device)
        texts = greedy_answers(model, tokenizer, batch["input_ids"][idx],
                               batch["attention_mask"][idx], max_new_tokens)
        for i, text in zip(missing, texts):
            content = split_answer(text, suffix)[0]
            answers[i], correct[i], abstained[i] = (text, exact_match(content, aliases[i]),
                                                    is_abstention(content))
    return answers, correct, abstained
