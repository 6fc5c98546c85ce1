"""FactSFTModule: the teacher stays outside registered submodules; snapshot and checkpoint."""

from pathlib import Path

import pytest
import torch

from halluc_cl.methods import KLSelfDistillation
from halluc_cl.train.module import FactSFTModule
from halluc_cl.train.step import student_forward


def loaded(**kwargs) -> FactSFTModule:
    """The module on the tiny world with its model loaded (``setup`` does it in a fit)."""
    module = FactSFTModule("synthetic://tiny", **kwargs)
    module.load_model()
    return module


def test_construction_loads_nothing_and_setup_loads_once(tiny_model_dir, tmp_path):
    """A config is parsed without reading a model; ``load_model`` reads it once."""
    from halluc_cl.errors import HallucError

    missing = FactSFTModule(str(tmp_path / "no-model"))
    assert missing.student is None and missing.tokenizer is None
    with pytest.raises(HallucError):
        missing.load_model()
    module = loaded()
    student = module.student
    module.load_model()
    assert module.student is student and module.tokenizer is not None


def test_teacher_is_not_a_registered_submodule(tiny_model_dir):
    module = loaded(methods=[KLSelfDistillation()])
    n_params = sum(1 for _ in module.parameters())
    keys = set(module.state_dict())
    module.take_snapshot()
    teacher = module.methods[0].teacher  # the method's own
    assert teacher is not None and module.teacher_file.teacher is teacher
    assert sum(1 for _ in module.parameters()) == n_params
    assert set(module.state_dict()) == keys
    assert not any(p.requires_grad for p in teacher.model.parameters())
    assert not teacher.model.training


def test_snapshot_is_frozen_copy(tiny_model_dir):
    module = loaded(methods=[KLSelfDistillation()])
    module.take_snapshot()
    with torch.no_grad():
        for p in module.student.parameters():
            p.add_(1.0)
    teacher_p = next(module.methods[0].teacher.model.parameters())
    student_p = next(module.student.parameters())
    assert not torch.equal(teacher_p, student_p)


def test_checkpoint_round_trip_restores_teacher_and_reference(tiny_model_dir, tmp_path):
    import lightning as L

    a = loaded(methods=[KLSelfDistillation()])
    a.trainer = L.Trainer(default_root_dir=tmp_path, logger=False, accelerator="cpu")
    a.take_snapshot()
    a.reference = {"f1": True}
    a.history = [{"epoch": 0, "heldout_test_acc": 1.0}]
    ckpt: dict = {}
    a.on_save_checkpoint(ckpt)
    # the teacher's weights went beside the checkpoints, once; the checkpoint names them
    teacher = ckpt["halluc_cl"]["teacher"]
    assert teacher["file"] == str(tmp_path / "checkpoints" / "snapshot_teacher.pt")
    written = Path(teacher["file"]).stat().st_mtime_ns
    again: dict = {}
    a.on_save_checkpoint(again)
    assert again["halluc_cl"]["teacher"] == teacher
    assert Path(teacher["file"]).stat().st_mtime_ns == written
    b = loaded(methods=[KLSelfDistillation()])
    with torch.no_grad():  # the resumed student is not the snapshot
        for p in b.student.parameters():
            p.add_(1.0)
    b.on_load_checkpoint(ckpt)
    assert b.reference == {"f1": True} and b.history == a.history
    assert b.methods[0].teacher is None  # taken back once the fit starts
    b.on_train_start()
    for pa, pb in zip(a.methods[0].teacher.model.parameters(),
                      b.methods[0].teacher.model.parameters()):
        assert torch.equal(pa, pb)


def test_no_teacher_without_a_plugin_that_needs_one(tiny_model_dir):
    module = loaded()
    module.take_snapshot()
    assert module.teacher_file.teacher is None


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model_dir):
    ids = torch.randint(5, 60, (2, 9), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    grads = []
    for flag in (False, True):
        module = loaded(gradient_checkpointing=flag)
        assert module.student.is_gradient_checkpointing == flag
        module.student(**batch).loss.backward()
        grads.append([p.grad.clone() for p in module.student.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_step_metrics_are_logged_on_the_loggers_steps_with_that_steps_loss(tiny_model_dir, one_thread,
                                                                           tmp_path):
    """training_step logs only on the steps the logger writes; the rows hold those steps' loss."""
    import csv

    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from halluc_cl.data.datamodule import FactDataModule
    from halluc_cl.train.module import FactSFTModule

    losses: dict[int, float] = {}

    class Capture(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses[trainer.global_step - 1] = float(outputs["loss"])

    L.seed_everything(0, verbose=False)
    module = FactSFTModule("synthetic://tiny", optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
    data = FactDataModule(source="synthetic://tiny", tokenizer="synthetic://tiny", n_train=32,
                          n_heldout=16, batch_size=4)
    module.connect(data)
    trainer = L.Trainer(max_epochs=2, reload_dataloaders_every_n_epochs=1, num_sanity_val_steps=0,
                        log_every_n_steps=3, logger=CSVLogger(tmp_path, name="log"),
                        enable_progress_bar=False, enable_checkpointing=False,
                        callbacks=[Capture()], accelerator="cpu")
    trainer.fit(module, datamodule=data)
    path = next(tmp_path.glob("log/*/metrics.csv"))
    rows = [r for r in csv.DictReader(path.open()) if r.get("train/loss")]
    assert [int(r["step"]) for r in rows] == [s for s in sorted(losses) if (s + 1) % 3 == 0]
    for r in rows:
        assert float(r["train/loss"]) == pytest.approx(losses[int(r["step"])], rel=1e-6)


def test_compile_flag_compiles_student_and_teacher_in_place(tiny_model_dir):
    module = loaded(methods=[KLSelfDistillation()], compile=True)
    names = [n for n, _ in module.student.named_parameters()]
    module.setup("validate")  # outside a Trainer: no data module, no strategy
    assert module.student._compiled_call_impl is not None
    teacher = module._live_teacher()
    # the teacher's own compiled forward, not the student's graph copied along
    assert teacher.model._compiled_call_impl is not None
    assert teacher.model._compiled_call_impl is not module.student._compiled_call_impl
    assert [n for n, _ in module.student.named_parameters()] == names  # checkpoints unchanged


@pytest.mark.parametrize(("max_epochs", "max_steps", "limit", "accumulate", "refused"), [
    (2, -1, 1.0, 1, (r"trainer.max_epochs=2 ends the fit within the warm-up \(model.warmup_"
                    r"epochs=2\): no SFT epoch would run")),
    (0, -1, 1.0, 1, "trainer.max_epochs=0 ends the fit within the warm-up"),
    (3, -1, 1.0, 1, None),
    (-1, -1, 1.0, 1, None),  # unlimited
    (-1, 4, 1.0, 1, r"trainer.max_steps=4 .* takes 4 optimizer step\(s\)"),
    (-1, 5, 1.0, 1, None),
    (10, 4, 1.0, 1, "trainer.max_steps=4"),  # whichever ends the fit first
    (-1, 2, 1.0, 2, r"takes 2 optimizer step\(s\)"),  # 2 batches per optimizer step
    (-1, 3, 1.0, 2, None),
    (-1, 2, 1, 1, r"takes 2 optimizer step\(s\)"),  # limit_train_batches=1: 1 batch an epoch
    (-1, 3, 0.5, 1, None),
])
def test_schedule_that_ends_within_the_warm_up_is_refused(max_epochs, max_steps, limit,
                                                          accumulate, refused):
    """A fit must train past the warm-up (here 2 epochs of 2 batches): a warm-up alone is not
    a result."""
    from types import SimpleNamespace

    from halluc_cl.errors import ConfigError
    from halluc_cl.train.fit_checks import check_schedule

    trainer = SimpleNamespace(max_epochs=max_epochs, max_steps=max_steps,
                              limit_train_batches=limit, accumulate_grad_batches=accumulate)
    if refused is None:
        check_schedule(trainer, warmup_epochs=2, batches=2)
    else:
        with pytest.raises(ConfigError, match=refused):
            check_schedule(trainer, warmup_epochs=2, batches=2)


@pytest.mark.parametrize("extra_pad", [0, 12])  # extra rows narrower, wider than the SFT rows
def test_extra_inputs_ride_in_the_sft_forward(tiny_model_dir, one_thread, extra_pad):
    """One stacked forward gives the SFT loss and the logits of both row sets as two
    separate forwards do (the extra rows carry no labels, so the loss is the batch's)."""
    import random

    import torch.nn.functional as F

    from halluc_cl.data.datamodule import FactDataModule

    module = loaded(methods=[KLSelfDistillation(extra_weight=1.0)])
    data = FactDataModule(source="synthetic://tiny", tokenizer="synthetic://tiny", n_train=32,
                          n_heldout=16, extra_per_batch=6)
    data.load()
    batch = data.collate_train(data._train_rows(epoch=1)[:8])
    batch.update(data.extra_inputs.sample(6, random.Random(0)))
    for key, value in (("extra_input_ids", module.tokenizer.pad_token_id),
                       ("extra_attention_mask", 0)):  # trailing padding columns
        batch[key] = F.pad(batch[key], (0, extra_pad), value=value)
    width, extra_width = batch["input_ids"].shape[1], batch["extra_input_ids"].shape[1]
    assert (extra_width > width) if extra_pad else (extra_width < width)
    student = module.student.eval()
    with torch.no_grad():
        loss, logits, extra_logits = student_forward(module, batch, extra=True)
        sft = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      labels=batch["labels"])
        alone = student(input_ids=batch["extra_input_ids"],
                        attention_mask=batch["extra_attention_mask"]).logits
    assert loss.item() == pytest.approx(sft.loss.item(), rel=1e-5)
    real, extra_real = batch["attention_mask"].bool(), batch["extra_attention_mask"].bool()
    assert torch.allclose(logits[real], sft.logits[real], atol=1e-5)
    assert torch.allclose(extra_logits[extra_real], alone[extra_real], atol=1e-5)


def test_nearest_inputs_are_the_snapshots_neighbours_of_the_batchs_new_facts(fit_tiny):
    """The snapshot ranks the pool by its states; each SFT batch then carries the first
    neighbours of its Unknown facts."""
    import torch.nn.functional as F

    module, trainer = fit_tiny([KLSelfDistillation(extra_weight=1.0)], epochs=2, lr=0.0,
                               extra_per_batch=4, extra_select="nearest")
    data = trainer.datamodule
    inputs = data.extra_inputs
    unknown = data.splits["unknown_train"]
    assert inputs.neighbours.shape == (len(unknown), 4)
    queries = module.prompt_states(inputs.prompt_ids(unknown))  # lr 0: still the snapshot
    pool = module.prompt_states(inputs.prompt_ids())
    similarity = F.normalize(queries, dim=-1) @ F.normalize(pool, dim=-1).T
    best = similarity.argmax(-1)
    assert (similarity.gather(1, inputs.neighbours[:, :1].long()).squeeze(1)
            >= similarity[torch.arange(len(unknown)), best] - 1e-6).all()
    checked = 0
    for batch in data.train_dataloader():  # an SFT epoch (the fit ended after one)
        rows = [int(k.split(":")[1]) for k in batch["keys"] if k.startswith("unknown_train:")]
        firsts = {f"pool:{inputs.neighbours[r, 0]}" for r in rows}
        if rows and len(firsts) <= 4:
            assert firsts <= set(batch["extra_keys"])
            checked += 1
    assert checked
