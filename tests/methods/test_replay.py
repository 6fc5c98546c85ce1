"""Budget-matched replay (ReplayLoss): the penalty by hand, its effect on training, its checks."""

from __future__ import annotations

import math

import pytest
import torch

from halluc_cl.errors import ConfigError
from halluc_cl.facts.prompts import IGNORE_INDEX
from halluc_cl.methods import ExtraOutputs, ReplayLoss, StepOutputs


def test_penalty_is_weighted_cross_entropy_on_answer_tokens():
    # one sequence of 3 tokens over a vocabulary of 2; only token 2 (value 1) is an answer
    logits = torch.tensor([[[0.0, 0.0], [1.0, 3.0], [5.0, -5.0]]])
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 1]])
    def outputs(labels):
        mask = torch.ones_like(labels)
        return StepOutputs(logits=torch.zeros(1, 1, 2),
                           extra=ExtraOutputs(logits=logits, attention_mask=mask, labels=labels))

    out = ReplayLoss(weight=2.0).penalty({}, outputs(labels))
    # position 1 predicts token 2: -log softmax([1, 3])[1] = log(1 + e^-2)
    assert out.item() == pytest.approx(2.0 * math.log(1 + math.exp(-2.0)), rel=1e-6)
    none = ReplayLoss().penalty({}, outputs(torch.full_like(labels, IGNORE_INDEX)))
    assert none is None


def test_weight_and_missing_inputs_are_config_errors():
    with pytest.raises(ConfigError, match="must be > 0"):
        ReplayLoss(weight=0.0)
    with pytest.raises(ConfigError, match="extra_per_batch"):
        ReplayLoss().penalty({}, StepOutputs(logits=torch.zeros(1, 2, 3)))


def _pool_loss(module, trainer) -> float:
    """Mean answer cross-entropy of the student on the whole replay pool."""
    data = trainer.datamodule
    batch = data.extra_inputs.sample(len(data.extra_inputs.pool), __import__("random").Random(0))
    with torch.no_grad():
        out = module.student(input_ids=batch["extra_input_ids"],
                             attention_mask=batch["extra_attention_mask"],
                             labels=batch["extra_labels"])
    return out.loss.item()


def test_replay_lowers_the_loss_on_replayed_facts(fit_tiny):
    kw = {"extra_per_batch": 8, "extra_source": "qa", "unknown_fraction": 0.5}
    plain, plain_trainer = fit_tiny([ReplayLoss(weight=1e-6)], epochs=4, lr=3e-3, **kw)
    replay, replay_trainer = fit_tiny([ReplayLoss(weight=3.0)], epochs=4, lr=3e-3, **kw)
    assert _pool_loss(replay, replay_trainer) < 0.8 * _pool_loss(plain, plain_trainer)
    # same steps, same inputs: the student saw the same tokens; no teacher was run
    assert replay.cost == plain.cost and int(replay.cost["teacher_tokens"]) == 0
    assert replay.teacher_file.teacher is None


def test_replay_needs_answers_in_its_inputs(fit_tiny):
    with pytest.raises(ConfigError, match="extra_source qa"):
        fit_tiny([ReplayLoss()], epochs=2, extra_per_batch=4, extra_source="questions")
