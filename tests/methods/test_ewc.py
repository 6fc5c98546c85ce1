"""EWC: the per-sample Fisher by hand, the penalty, its effect on training, and resume."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from halluc_cl.errors import ConfigError
from halluc_cl.methods import EWC
from halluc_cl.methods.anchor import trainable
from halluc_cl.methods.ewc import answer_log_likelihood, diagonal_fisher
from halluc_cl.synthetic.resolve import resolve


def _gaussian_ll(model: nn.Linear, sample: tuple[float, float]) -> torch.Tensor:
    x, y = sample
    return -0.5 * (y - model(torch.tensor([[x]]))[0, 0]) ** 2


def test_fisher_is_mean_of_per_sample_squared_gradients():
    # y_hat = w x + b at w=0.5, b=0; d ll / d(w, b) = r·(x, 1) with r = y − y_hat
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.fill_(0.5)
        model.bias.fill_(0.0)
    samples = [(1.0, 2.0), (2.0, -1.0)]  # r = 1.5 → (1.5, 1.5); r = −2 → (−4, −2)
    fisher = diagonal_fisher(model, samples, _gaussian_ll, dict(model.named_parameters()))
    assert fisher["weight"].item() == pytest.approx((1.5**2 + 4.0**2) / 2)  # 9.125
    assert fisher["bias"].item() == pytest.approx((1.5**2 + 2.0**2) / 2)  # 3.125
    # the squared mean-batch gradient, the flaw avoided here, would give 1.5625 and 0.0625
    assert fisher["weight"].item() != pytest.approx(((1.5 - 4.0) / 2) ** 2)
    assert model.weight.grad is None  # autograd.grad leaves no .grad behind


def test_answer_log_likelihood_sums_answer_tokens(tiny_model_dir):
    from halluc_cl.data.datamodule import FactDataModule
    from halluc_cl.lm.loading import load_causal_lm

    data = FactDataModule("synthetic://tiny", "synthetic://tiny", n_train=32, n_heldout=16)
    data.load()
    model = load_causal_lm(resolve("synthetic://tiny"))
    batch = data.known_samples(1)[0]
    n_answer = int((batch["labels"][:, 1:] != -100).sum())
    with torch.no_grad():
        loss = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}).loss
        ll = answer_log_likelihood(model, batch)
    assert ll.item() == pytest.approx(-loss.item() * n_answer, rel=1e-5)


def test_penalty_is_fisher_weighted_squared_distance():
    model = nn.Linear(2, 1)

    class Holder:
        student = model

    reg = EWC(weight=3.0)
    reg.capture(Holder)
    reg.importance = {"weight": torch.tensor([[2.0, 0.5]]), "bias": torch.tensor([4.0])}
    with torch.no_grad():
        model.weight += torch.tensor([[1.0, 2.0]])
        model.bias -= 0.5
    want = 0.5 * 3.0 * (2.0 * 1.0 + 0.5 * 4.0 + 4.0 * 0.25)
    assert reg.penalty({}, {}).item() == pytest.approx(want)


@pytest.mark.parametrize("kwargs, match", [({"fisher_samples": 0}, "fisher_samples"),
                                           ({"weight": -1.0}, "weight")])
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        EWC(**kwargs)


def test_ewc_keeps_fisher_weighted_distance_small_and_resumes(fit_tiny, tmp_path):
    ewc = EWC(weight=200.0, fisher_samples=8)
    module, trainer = fit_tiny([ewc], epochs=3, lr=3e-3)
    fisher_mean = torch.cat([f.flatten() for f in ewc.importance.values()]).mean()
    assert fisher_mean.item() == pytest.approx(1.0)  # normalised
    assert set(ewc.importance) == set(trainable(module.student))
    with_ewc = ewc.distance().item()
    plain, _ = fit_tiny([], epochs=3, lr=3e-3)
    ewc._params = trainable(plain.student)  # same snapshot: penalties start after the warm-up
    without = ewc.distance().item()
    assert with_ewc < 0.5 * without

    ckpt = tmp_path / "ewc.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed = EWC(weight=200.0, fisher_samples=8)
    fit_tiny([resumed], epochs=4, lr=3e-3, ckpt_path=str(ckpt))
    for name, fisher in ewc.importance.items():
        assert torch.equal(resumed.importance[name], fisher)
        assert torch.equal(resumed.anchor[name], ewc.anchor[name])
