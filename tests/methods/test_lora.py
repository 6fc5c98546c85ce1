"""LoRA through peft: adapters on chosen groups, frozen base, adapter-off teacher at the snapshot."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel

from halluc_cl.errors import ConfigError
from halluc_cl.lm.loading import load_causal_lm
from halluc_cl.methods import FitContext, KLSelfDistillation, LoRA
from halluc_cl.synthetic.resolve import resolve
from halluc_cl.train.module import FactSFTModule


def _wrapped(groups=("attention", "mlp")) -> FactSFTModule:
    module = FactSFTModule("synthetic://tiny", methods=[LoRA(rank=2, groups=list(groups))])
    module.load_model()
    context = module.fit_context()
    module.methods[0].setup(context)
    module.student = context.student
    return module


def test_targets_follow_groups(tiny_model_dir):
    lora = LoRA(groups=["attention"])
    targets = lora.target_modules(load_causal_lm(resolve("synthetic://tiny")))
    assert targets and all(".attn." in t for t in targets)
    assert {t.rsplit(".", 1)[1] for t in targets} == {"c_attn", "c_proj"}
    mlp = LoRA(groups=["mlp"]).target_modules(load_causal_lm(resolve("synthetic://tiny")))
    assert {t.rsplit(".", 1)[1] for t in mlp} == {"c_fc", "c_proj"}


def test_only_adapters_train(tiny_model_dir):
    module = _wrapped()
    assert isinstance(module.student, PeftModel)
    trainable = [n for n, p in module.student.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_snapshot_folds_adapter_into_base_and_teacher_is_adapter_off(tiny_model_dir):
    torch.manual_seed(0)  # peft draws lora_A from the global stream, which the test order moves
    module = _wrapped()
    ids = torch.randint(5, 60, (2, 7), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in module.student.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5, generator=g)  # a trained adapter
        module.student.eval()
        before = module.student(**batch).logits
    context = FitContext(student=module.student, optimizer_state=dict)  # no optimizer yet
    module.methods[0].on_snapshot(context)
    teacher = module.methods[0].make_teacher(context)
    assert teacher.model is module.student  # no second copy
    with torch.no_grad():
        assert torch.allclose(module.student(**batch).logits, before, atol=1e-5)
        assert torch.allclose(teacher.logits(batch), before, atol=1e-5)
    assert all(not p.any() for n, p in module.student.named_parameters() if "lora_B" in n)


def test_lora_with_distillation_fit(fit_tiny):
    base = dict(load_causal_lm(resolve("synthetic://tiny")).named_parameters())
    module, _ = fit_tiny([KLSelfDistillation(weight=1.0), LoRA(rank=4)], epochs=3, lr=3e-3)
    assert module.methods[0].teacher.model is module.student  # the adapter-off student
    adapted = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
               for n, p in module.student.named_parameters() if "lora_" not in n}
    changed = {n for n, p in adapted.items() if not torch.equal(p, base[n])}
    # only adapted layers' weights move (the adapter folded in at the snapshot); biases never
    assert changed and all(n.endswith(".weight") and (".attn." in n or ".mlp." in n)
                           for n in changed)
    assert module.history[-1]["epoch"] == 2


@pytest.mark.parametrize("kwargs, match", [({"rank": 0}, "rank"), ({"dropout": 1.0}, "dropout"),
                                           ({"groups": []}, "group")])
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        LoRA(**kwargs)
