"""The evaluation side of a fit's data: each evaluated split's facts, prompts and candidate
answers, tokenized once; its batches, dealt out whole among processes; the abstention
phrases; and the check that every fact fits the model's context."""

from __future__ import annotations

from torch.utils.data import DataLoader, DistributedSampler

from halluc_cl.data.splits import HELDOUT_SPLITS
from halluc_cl.errors import DataError
from halluc_cl.facts.matching import IDK_ANSWERS
from halluc_cl.facts.padding import left_pad
from halluc_cl.facts.prompts import PromptFormat, encode_prompts
from halluc_cl.facts.schema import Fact

EVAL_SPLITS = ("heldout_test", "heldout_val", "unknown_train", "known_train")


class EvalSplits:
    """The evaluated splits of one data module.

    Args:
        splits: Split name -> its facts (the training splits in seeded random order).
        tokenizer: The model's tokenizer.
        prompt: The prompt format.
        batch_size: Evaluation batch size.
        max_facts: Evaluate at most this many facts of the training splits (the held-out
            splits always in full); ``None``: all.
        unknown_answer: The "I don't know" relabel's answer, an abstention phrase too.
    """

    def __init__(self, splits: dict[str, list[Fact]], tokenizer, prompt: PromptFormat,
                 batch_size: int, max_facts: int | None = None,
                 unknown_answer: str | None = None) -> None:
        self.splits, self.tokenizer, self.prompt = splits, tokenizer, prompt
        self.batch_size, self.max_facts, self.unknown_answer = batch_size, max_facts, unknown_answer
        self._tokens: dict[str, tuple[list, list, list]] = {}
        self._abstain: list[str] | None = None

    def names(self) -> list[str]:
        """Names of the evaluation dataloaders, in order (empty splits are left out)."""
        return [s for s in EVAL_SPLITS if self.splits.get(s)]

    def tokens(self, split: str) -> tuple[list, list, list]:
        """The split's evaluated facts, prompt ids and candidate answer ids (its aliases,
        then the abstention phrases), tokenized once and kept for every evaluation."""
        if split not in self._tokens:
            facts = self.splits[split]
            if split not in HELDOUT_SPLITS and self.max_facts is not None:
                facts = facts[:self.max_facts]  # the splits are in seeded random order
            encode = encode_prompts(self.tokenizer, [self.prompt.prompt(f.question)
                                                     for f in facts])
            abstain = [self.target_ids(p) for p in self.abstain_phrases()]
            candidates = [[self.target_ids(a) for a in f.aliases] + abstain for f in facts]
            self._tokens[split] = (facts, encode[:len(facts)], candidates)
        return self._tokens[split]

    def loader(self, split: str, rank: int = 0, world: int = 1) -> DataLoader:
        """The split's evaluation batches; under several processes, this process's share.

        Batches are dealt out whole (process ``r`` takes batches ``r, r + W, …``), so each is
        the one-process batch, padded alike: the same forward, the same numbers. The list is
        first padded with repeated batches to a multiple of ``W``, so that every process runs
        as many (ZeRO-3 gathers weights in every forward, a collective); the evaluation hooks
        drop the repeats by fact.
        """
        facts, prompts, candidates = self.tokens(split)
        phrases = self.abstain_phrases()

        def collate(indices: list[int]) -> dict:
            ids, mask = left_pad([prompts[i] for i in indices], self.tokenizer.pad_token_id)
            return {"input_ids": ids, "attention_mask": mask, "split": split,
                    "facts": [facts[i] for i in indices], "positions": list(indices),
                    "prompt_ids": [prompts[i] for i in indices], "abstain_phrases": phrases,
                    "candidates": [candidates[i] for i in indices],
                    "answer_suffix": self.prompt.answer_suffix}

        size = self.batch_size
        batches = [list(range(i, min(i + size, len(facts)))) for i in range(0, len(facts), size)]
        batches += batches[:-len(batches) % world]  # a multiple of the process count
        mine = batches[rank::world]
        # a one-replica DistributedSampler keeps Lightning from dealing out the batches again
        return DataLoader(mine, batch_size=None, collate_fn=collate,
                          sampler=DistributedSampler(mine, num_replicas=1, rank=0, shuffle=False))

    def abstain_phrases(self) -> list[str]:
        """Answers that read as abstentions, checked by one-forward evaluation: the IDK
        relabel's answer (if any), then ``IDK_ANSWERS``, each as written and capitalised.

        Only spellings the tokenizer encodes without its unknown token are kept: in a
        word-level vocabulary "i don't know" would encode as ``<unk> don ' t know``, and a
        model emitting ``<unk>`` would be scored as abstaining.
        """
        if self._abstain is not None:  # the same for every split and evaluation
            return list(self._abstain)
        base = [*([self.unknown_answer] if self.unknown_answer else []), *IDK_ANSWERS]
        variants = dict.fromkeys(v for p in base for v in (p, p[:1].upper() + p[1:]))
        unk = self.tokenizer.unk_token_id
        kept, seen = [], set()
        for phrase in variants:
            ids = tuple(self.target_ids(phrase))
            if ids not in seen and (unk is None or unk not in ids):
                kept.append(phrase)
                seen.add(ids)
        self._abstain = kept
        return list(kept)

    def target_ids(self, answer: str) -> list[int]:
        """The token ids of ``answer`` as the prompt format writes it after the prompt."""
        return self.tokenizer(self.prompt.target(answer), add_special_tokens=False)["input_ids"]

    def check_context(self, limit: int, max_new_tokens: int) -> None:
        """Every evaluation prompt plus ``max_new_tokens`` must fit ``limit`` positions."""
        for split in self.names():
            facts, prompts, _ = self.tokens(split)
            lengths = [len(ids) for ids in prompts]
            if lengths and max(lengths) + max_new_tokens > limit:
                fact = facts[lengths.index(max(lengths))]
                raise DataError(f"the prompt of fact {fact.id!r} ({split}) is {max(lengths)} "
                                f"tokens; with model.max_new_tokens={max_new_tokens} it "
                                f"exceeds the model's context of {limit} positions")
