"""What one step runs (``train/step.py``): the loss from the answer positions only is
transformers' loss, with its gradient, and makes no fp32 copy of the batch's
full-vocabulary logits."""

from __future__ import annotations

import pytest
import torch

from halluc_cl.facts.prompts import IGNORE_INDEX
from halluc_cl.train.module import FactSFTModule
from halluc_cl.train.step import answer_loss, student_forward


def _batch(vocab: int) -> dict:
    ids = torch.randint(5, vocab, (3, 11), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :7] = IGNORE_INDEX  # the prompt
    labels[2, 9:] = IGNORE_INDEX  # a shorter answer
    mask = torch.ones_like(ids)
    mask[2, 10:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _module(loss_positions: str) -> FactSFTModule:
    module = FactSFTModule("synthetic://tiny", loss_positions=loss_positions)
    module.load_model()
    return module


@pytest.mark.parametrize("items", [None, 7.5])
def test_answer_loss_is_transformers_loss_with_its_gradient(tiny_model_dir, items):
    student = _module("all").student
    batch = _batch(student.config.vocab_size)
    normaliser = {} if items is None else {"num_items_in_batch": torch.tensor(items)}
    theirs = student(**batch, **normaliser).loss
    grads = torch.autograd.grad(theirs, list(student.parameters()))
    logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    ours = answer_loss(logits, batch["labels"], normaliser)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    for a, b in zip(grads, torch.autograd.grad(ours, list(student.parameters()))):
        assert torch.allclose(a, b, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("positions, full", [("all", 2), ("answer", 1)])
def test_the_answer_loss_makes_no_copy_of_the_full_logits(tiny_model_dir, positions, full,
                                                          vocab_tensors):
    """``all``: the logits and transformers' log-softmax of all of them; ``answer``: the
    logits alone (the log-softmax covers the answer positions)."""
    module = _module(positions)
    batch = _batch(module.student.config.vocab_size)
    rows, length = batch["input_ids"].shape
    vocab = module.student.config.vocab_size
    counter = vocab_tensors(vocab, rows * (length - 1) * vocab, module.student)
    with torch.no_grad(), counter:
        loss, logits, _ = student_forward(module, batch, extra=False)
    assert logits.shape == (rows, length, vocab)
    assert counter.count == full and torch.isfinite(loss)
