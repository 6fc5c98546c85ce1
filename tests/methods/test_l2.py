"""L2 to anchor: the penalty, gradient-norm matching to the KL term, and its effect."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from halluc_cl.errors import ConfigError
from halluc_cl.methods import FitContext, KLSelfDistillation, L2ToAnchor, StepOutputs
from halluc_cl.methods.anchor import trainable
from halluc_cl.methods.teacher import SnapshotTeacher


def _gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=20, n_positions=16, n_embd=8, n_layer=1,
                                      n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))


def _batch() -> dict:
    ids = torch.randint(3, 20, (2, 8), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :5] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def test_penalty_is_half_lambda_squared_distance():
    model = torch.nn.Linear(2, 1)
    reg = L2ToAnchor(weight=4.0)
    reg.on_snapshot(FitContext(student=model))
    with torch.no_grad():
        model.weight += torch.tensor([[1.0, -2.0]])
        model.bias += 3.0
    assert reg.penalty({}, {}).item() == pytest.approx(0.5 * 4.0 * (1 + 4 + 9))


def test_init_anchor_is_taken_at_setup_not_at_snapshot():
    model = torch.nn.Linear(2, 1)
    reg = L2ToAnchor(anchor="init")
    start = model.weight.detach().clone()
    reg.setup(FitContext(student=model))
    with torch.no_grad():
        model.weight += 1.0
    reg.on_snapshot(FitContext(student=model))
    assert torch.equal(reg.anchor["weight"], start)


def test_match_kl_sets_lambda_to_equal_gradient_norms():
    student, batch = _gpt2(), _batch()
    teacher = copy.deepcopy(student)
    reg = L2ToAnchor(weight=1.0, match_kl=KLSelfDistillation(weight=1.0, temperature=0.5))
    # anchor = teacher weights, and the KL term's teacher a frozen copy of them ...
    reg.on_snapshot(FitContext(student=teacher, snapshot_teacher=lambda: SnapshotTeacher(teacher),
                               tokenizer=SimpleNamespace(pad_token_id=0)))
    assert isinstance(reg.match_kl.teacher, SnapshotTeacher)
    reg._params = trainable(student)  # ... applied to the student
    outputs = lambda: StepOutputs(
        logits=student(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits)

    # at the anchor both gradients vanish: no penalty, no scale yet
    assert reg.penalty(batch, outputs()) is None and reg.scale is None

    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = outputs()
    penalty = reg.penalty(batch, out)
    params = list(student.parameters())
    g_pen = torch.autograd.grad(penalty, params, retain_graph=True)
    kl_term = KLSelfDistillation(weight=1.0, temperature=0.5)
    kl_term.teacher = SnapshotTeacher(teacher)
    g_kl = torch.autograd.grad(kl_term.penalty(batch, out), params)
    norm = lambda gs: torch.sqrt(sum(g.pow(2).sum() for g in gs)).item()
    assert norm(g_pen) == pytest.approx(norm(g_kl), rel=1e-4)
    assert reg.match_kl.teacher is None  # measured once, then fixed: its teacher let go
    assert L2ToAnchor(match_kl=KLSelfDistillation()).load_state_dict(reg.state_dict()) is None


@pytest.mark.parametrize("kwargs, match", [
    ({"anchor": "base"}, "anchor"), ({"weight": -0.1}, "weight"),
    ({"match_kl": KLSelfDistillation(extra_weight=1.0)}, "extra_weight"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        L2ToAnchor(**kwargs)


def test_l2_keeps_weights_closer_to_anchor_than_sft(fit_tiny):
    l2 = L2ToAnchor(weight=50.0)
    fit_tiny([l2], epochs=3, lr=3e-3)
    with_l2 = l2.distance().item()
    plain, _ = fit_tiny([], epochs=3, lr=3e-3)
    l2._params = trainable(plain.student)  # same snapshot: penalties start after the warm-up
    assert 0 < with_l2 < 0.5 * l2.distance().item()


@pytest.mark.parametrize(("plugin_cls", "weight", "match"), [
    ("L2ToAnchor", 2.0, False), ("L2ToAnchor", 0.5, True), ("EWC", 0.02, False)])
def test_gradient_added_before_the_step_equals_the_autograd_penalty(tiny_model_dir, one_thread,
                                                                    plugin_cls, weight, match):
    """The fused path (gradient λ·w·(θ−θ*) added before the optimizer step) trains like the
    penalty as an autograd loss term. Plain SGD, whose update is linear in the gradient (Adam
    would amplify rounding differences where loss and pull balance)."""
    import lightning as L

    import halluc_cl.methods as regs
    from halluc_cl.data.datamodule import FactDataModule
    from halluc_cl.train.module import FactSFTModule

    cls = getattr(regs, plugin_cls)

    class Autograd(cls):
        def setup(self, module) -> None:
            super().setup(module)
            self.fused = False

    def fit(plugins):
        L.seed_everything(0, verbose=False)
        module = FactSFTModule("synthetic://tiny", methods=plugins,
                               optimizer=lambda p: torch.optim.SGD(p, lr=0.02))
        data = FactDataModule(source="synthetic://tiny", tokenizer="synthetic://tiny",
                              n_train=32, n_heldout=16, batch_size=8)
        module.connect(data)
        L.Trainer(max_epochs=3, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0,
                  logger=False, enable_progress_bar=False, enable_model_summary=False,
                  enable_checkpointing=False, accelerator="cpu").fit(module, datamodule=data)
        return module.student.state_dict()

    def kwargs():  # with match_kl, λ is set at the first step where both gradients are > 0
        return {"weight": weight, **({"match_kl": KLSelfDistillation()} if match else {})}

    fused, autograd = cls(**kwargs()), Autograd(**kwargs())
    weights = {"fused": fit([fused]), "autograd": fit([autograd]), "sft": fit([])}
    assert fused.fused and not autograd.fused
    moved = max((weights["fused"][k] - weights["sft"][k]).abs().max().item()
                for k in weights["sft"])
    assert moved > 1e-3  # the pull changed training
    gap = max((v - weights["autograd"][k]).abs().max().item() for k, v in weights["fused"].items())
    assert gap < 1e-3 * moved  # the same training, up to rounding carried through 10 steps
