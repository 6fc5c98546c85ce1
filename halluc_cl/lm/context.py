"""Context-length check of a fit's data against the model (before any step runs)."""

from __future__ import annotations

from halluc_cl.errors import DataError


def check_context(module, data, training: bool) -> None:
    """Every training example, and every evaluation prompt plus ``max_new_tokens``, must fit
    the model's context (positions past it fail deep inside the model).

    Args:
        module: The ``FactSFTModule`` (its ``student`` and ``max_new_tokens``).
        data: The ``FactDataModule`` (anything else is not checked).
        training: Check the training splits too (the fit stage).
    """
    config = getattr(module.student, "config", None)
    limit = getattr(config, "n_positions", None) or \
        getattr(config, "max_position_embeddings", None)
    if not limit or not hasattr(data, "_eval_tokens") or not hasattr(data, "encoded"):
        return
    for split in ("known_train", "unknown_train") if training else ():
        lengths = [len(ids) for ids in data.encoded(split)["input_ids"]] \
            if data.splits[split] else []
        if lengths and max(lengths) > limit:
            i = lengths.index(max(lengths))
            fact = data.splits[split][data.encoded(split)[i]["idx"]]
            raise DataError(f"fact {fact.id!r} ({split}) is {lengths[i]} tokens as prompt + "
                            f"answer, more than the model's context of {limit} positions; "
                            "shorten it or leave it out of data.source")
    for split in data.eval_split_names():
        facts, prompts, _ = data._eval_tokens(split)  # what is evaluated, tokenized once
        lengths = [len(ids) for ids in prompts]
        if lengths and max(lengths) + module.max_new_tokens > limit:
            fact = facts[lengths.index(max(lengths))]
            raise DataError(f"the prompt of fact {fact.id!r} ({split}) is {max(lengths)} "
                            f"tokens; with model.max_new_tokens={module.max_new_tokens} it "
                            f"exceeds the model's context of {limit} positions")
