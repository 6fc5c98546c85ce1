"""Training examples tokenized with ``datasets``: prompt + answer ids and the labels that
train on the answer only (``facts.prompts.encode_example``), one row per fact."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager

import datasets
from datasets import Dataset

from halluc_cl.facts.prompts import PromptFormat, encode_example


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """``datasets``' progress bars off for a block, then as the caller had them."""
    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


def encode_facts(pairs: list[tuple[str, str]], tokenizer, prompt: PromptFormat) -> Dataset:
    """``(question, answer)`` pairs as a ``Dataset`` of ``idx``, ``input_ids``, ``labels``
    (and ``attention_mask``), in order.

    Args:
        pairs: The questions and the answers to train on.
        tokenizer: The model's tokenizer.
        prompt: The prompt format.
    """
    records = [{"idx": i, "question": q, "answer": a} for i, (q, a) in enumerate(pairs)]
    ds = Dataset.from_list(records) if records else Dataset.from_dict({"idx": []})
    # an explicit fingerprint: otherwise `datasets` hashes the lambda's closure, which
    # reaches the trainer and the model (seconds per fit)
    key = json.dumps([records, repr(prompt), tokenizer.name_or_path])
    with _no_progress_bars():  # tokenizing a few hundred facts needs no bar
        return ds.map(
            lambda r: encode_example(tokenizer, prompt, r["question"], r["answer"]),
            remove_columns=[c for c in ds.column_names if c != "idx"],
            new_fingerprint=hashlib.sha256(key.encode()).hexdigest()[:32],
        )
