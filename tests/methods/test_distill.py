"""KL self-distillation: divergences by hand, position masks, the penalty, and its effect."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from halluc_cl.errors import ConfigError
from halluc_cl.methods import ExtraOutputs, KLSelfDistillation, StepOutputs
from halluc_cl.methods.distill import divergence, position_mask
from halluc_cl.methods.teacher import LiveTeacher, SnapshotTeacher
from halluc_cl.methods.teacher_cache import CachedTopKTeacher

STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
TEACHER = [[2.0, 0.0, 1.0], [0.5, 0.5, -0.5]]


# ---- reference formulas in plain Python -------------------------------------------------

def softmax(xs: list[float], tau: float) -> list[float]:
    exps = [math.exp(x / tau) for x in xs]
    total = sum(exps)
    return [e / total for e in exps]


def kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def ref_divergence(student: list[float], teacher: list[float], tau: float, direction: str) -> float:
    s, t = softmax(student, tau), softmax(teacher, tau)
    if direction == "forward":
        return kl(t, s)
    if direction == "reverse":
        return kl(s, t)
    m = [(a + b) / 2 for a, b in zip(s, t)]
    return 0.5 * kl(t, m) + 0.5 * kl(s, m)


def _div(student, teacher, tau, direction) -> list[float]:
    out = divergence(torch.tensor([student]), torch.tensor([teacher]), tau, direction)
    assert out.shape == (1, len(student))
    assert out.dtype == torch.float32
    return out[0].tolist()


# ---- divergence --------------------------------------------------------------------------

def test_forward_kl_literal_value():
    # teacher (0.75, 0.25), student (0.5, 0.5): 0.75 ln 1.5 + 0.25 ln 0.5
    value = _div([[0.0, 0.0]], [[math.log(3.0), 0.0]], 1.0, "forward")[0]
    assert value == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), abs=1e-6)
    assert value == pytest.approx(0.1308120, abs=1e-6)


@pytest.mark.parametrize("direction", ["forward", "reverse", "jsd"])
@pytest.mark.parametrize("tau", [1.0, 0.5, 2.0])
def test_divergence_matches_hand_formula(direction, tau):
    got = _div(STUDENT, TEACHER, tau, direction)
    want = [ref_divergence(s, t, tau, direction) for s, t in zip(STUDENT, TEACHER)]
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)
    assert all(w > 0.01 for w in want)


def test_directions_differ_and_jsd_is_symmetric_and_bounded():
    fwd = _div(STUDENT, TEACHER, 1.0, "forward")
    rev = _div(STUDENT, TEACHER, 1.0, "reverse")
    assert fwd[0] != pytest.approx(rev[0], abs=1e-3)
    assert _div(TEACHER, STUDENT, 1.0, "forward") == pytest.approx(rev, abs=1e-6)
    jsd = _div(STUDENT, TEACHER, 1.0, "jsd")
    assert _div(TEACHER, STUDENT, 1.0, "jsd") == pytest.approx(jsd, abs=1e-6)
    assert all(0 < j <= math.log(2) for j in jsd)


@pytest.mark.parametrize("direction", ["forward", "reverse", "jsd"])
@pytest.mark.parametrize("tau", [0.3, 1.0, 4.0])
def test_zero_when_student_equals_teacher(direction, tau):
    logits = torch.tensor([STUDENT, TEACHER])
    out = divergence(logits, logits.clone(), tau, direction)
    assert out.shape == (2, 2)
    assert torch.allclose(out, torch.zeros(2, 2), atol=1e-6)
    # shifting all logits of a position by a constant changes nothing either
    out = divergence(logits + 5.0, logits, tau, direction)
    assert torch.allclose(out, torch.zeros(2, 2), atol=1e-5)


@pytest.mark.parametrize("direction", ["forward", "reverse", "jsd"])
def test_temperature_effect(direction):
    s, t = torch.tensor([STUDENT]), torch.tensor([TEACHER])
    # dividing by tau is the same as pre-scaling the logits
    assert torch.allclose(divergence(s, t, 2.5, direction), divergence(s / 2.5, t / 2.5, 1.0,
                                                                      direction), atol=1e-6)
    values = {tau: sum(_div(STUDENT, TEACHER, tau, direction)) for tau in (0.5, 1.0, 2.0, 100.0)}
    want = {tau: sum(ref_divergence(a, b, tau, direction) for a, b in zip(STUDENT, TEACHER))
            for tau in values}
    assert values == pytest.approx(want, rel=1e-4, abs=1e-6)
    # softer distributions are closer: higher temperature, smaller divergence
    assert values[0.5] > values[1.0] > values[2.0] > values[100.0]
    assert values[100.0] < 1e-3


def test_bf16_logits_computed_in_float32():
    s = torch.tensor([STUDENT], dtype=torch.bfloat16)
    t = torch.tensor([TEACHER], dtype=torch.bfloat16)
    out = divergence(s, t, 1.0, "forward")
    assert out.dtype == torch.float32
    want = [ref_divergence(a, b, 1.0, "forward") for a, b in zip(s[0].float().tolist(),
                                                                 t[0].float().tolist())]
    assert out[0].tolist() == pytest.approx(want, rel=1e-5)


# ---- position masks ----------------------------------------------------------------------

def _batch() -> dict:
    # row 0: 3 prompt tokens, answer (5, 6) + eos 2; row 1: 2 prompt tokens, answer 7 + eos,
    # then right padding (pad id 0), as FactDataModule.collate_train builds it
    return {
        "input_ids": torch.tensor([[11, 12, 13, 5, 6, 2], [14, 15, 7, 2, 0, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]),
        "labels": torch.tensor([[-100, -100, -100, 5, 6, 2], [-100, -100, 7, 2, -100, -100]]),
        "is_unknown": torch.tensor([False, True]),
    }


def test_position_mask_answer():
    mask = position_mask(_batch(), "answer")
    assert mask.dtype == torch.bool
    assert mask.tolist() == [[False, False, True, True, True], [False, True, True, False, False]]


def test_position_mask_question():
    assert position_mask(_batch(), "question").tolist() == [
        [True, True, False, False, False], [True, False, False, False, False]]


def test_position_mask_all():
    assert position_mask(_batch(), "all").tolist() == [
        [True, True, True, True, True], [True, True, True, False, False]]


# ---- the penalty ------------------------------------------------------------------------

@dataclass
class Outputs(StepOutputs):
    """A step's outputs and the logits the test's teacher gives on the SFT batch."""

    teacher_logits: torch.Tensor | None = None


@dataclass
class Extra(ExtraOutputs):
    """The extra inputs' outputs and the logits the test's teacher gives on them."""

    teacher_logits: torch.Tensor | None = None


class RowTeacher(LiveTeacher):
    """A live teacher that answers each input row (its real tokens) with the logits given for
    that row, wherever the row sits in the inputs it is asked about (stacked or alone)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[tuple, torch.Tensor] = {}

    def add(self, input_ids, attention_mask, logits) -> None:
        for ids, mask, row in zip(input_ids, attention_mask, logits):
            self.rows[tuple(ids[mask.bool()].tolist())] = row

    def forward_logits(self, inputs: dict) -> torch.Tensor:
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        vocab = next(iter(self.rows.values())).shape[-1]
        out = torch.zeros(*ids.shape, vocab)
        for r in range(len(ids)):
            row = self.rows[tuple(ids[r][mask[r].bool()].tolist())][:ids.shape[1]]
            out[r, :len(row)] = row
        return out


def penalty(reg: KLSelfDistillation, batch: dict, outputs: Outputs):
    """``reg.penalty`` with a live teacher that gives ``outputs``' teacher logits."""
    teacher = RowTeacher()
    if outputs.teacher_logits is not None:
        teacher.add(batch["input_ids"], batch["attention_mask"], outputs.teacher_logits)
    if outputs.extra is not None and outputs.extra.teacher_logits is not None:
        teacher.add(batch["extra_input_ids"], outputs.extra.attention_mask,
                    outputs.extra.teacher_logits)
    reg.teacher = teacher
    return reg.penalty(batch, outputs)


def _outputs(seed: int = 0, vocab: int = 5) -> Outputs:
    g = torch.Generator().manual_seed(seed)
    return Outputs(logits=torch.randn(2, 6, vocab, generator=g) * 2,
                   teacher_logits=torch.randn(2, 6, vocab, generator=g) * 2)


def _ref_penalty(batch, outputs, weight, tau, direction, positions) -> float:
    """weight * mean over (b, i) of the divergence at logit position i, for hand-picked i."""
    values = [ref_divergence(outputs.logits[b, i].tolist(),
                             outputs.teacher_logits[b, i].tolist(), tau, direction)
              for b, i in positions]
    return weight * sum(values) / len(values)


ANSWER_POSITIONS = [(0, 2), (0, 3), (0, 4), (1, 1), (1, 2)]  # predict labels != -100
QUESTION_POSITIONS = [(0, 0), (0, 1), (1, 0)]
ALL_POSITIONS = [(0, i) for i in range(5)] + [(1, 0), (1, 1), (1, 2)]


@pytest.mark.parametrize("direction", ["forward", "reverse", "jsd"])
@pytest.mark.parametrize("tokens, positions", [("answer", ANSWER_POSITIONS),
                                               ("question", QUESTION_POSITIONS),
                                               ("all", ALL_POSITIONS)])
def test_penalty_is_weighted_mean_over_positions(direction, tokens, positions):
    batch, outputs = _batch(), _outputs()
    reg = KLSelfDistillation(weight=0.7, temperature=2.0, direction=direction, tokens=tokens)
    got = penalty(reg, batch, outputs)
    assert got.ndim == 0
    want = _ref_penalty(batch, outputs, 0.7, 2.0, direction, positions)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_penalty_ignores_unselected_positions():
    batch, outputs = _batch(), _outputs()
    reg = KLSelfDistillation(weight=1.0, temperature=1.0)
    before = penalty(reg, batch, outputs).item()
    changed = replace(outputs, logits=outputs.logits.clone())
    changed.logits[:, -1] += torch.tensor([9.0, -9.0, 0.0, 3.0, 1.0])  # predicts nothing
    changed.logits[0, 0:2] *= 5  # question positions
    changed.logits[1, 3:] -= torch.tensor([4.0, 0.0, 0.0, 0.0, 8.0])  # padding positions
    assert penalty(reg, batch, changed).item() == pytest.approx(before, rel=1e-6)
    changed.logits[1, 2, 0] += 3.0  # an answer position
    assert penalty(reg, batch, changed).item() != pytest.approx(before, rel=1e-3)


def test_penalty_default_is_forward_answer():
    batch, outputs = _batch(), _outputs(seed=3)
    reg = KLSelfDistillation()
    assert (reg.weight, reg.temperature, reg.direction, reg.tokens) == (
        1.0, 0.5, "forward", "answer")
    want = _ref_penalty(batch, outputs, 1.0, 0.5, "forward", ANSWER_POSITIONS)
    assert penalty(reg, batch, outputs).item() == pytest.approx(want, rel=1e-5)


def test_penalty_zero_for_identical_teacher_and_none_without_positions():
    batch, outputs = _batch(), _outputs()
    outputs.teacher_logits = outputs.logits.clone()
    assert penalty(KLSelfDistillation(weight=5.0), batch, outputs).item() == pytest.approx(
        0.0, abs=1e-6)
    batch["labels"] = torch.full_like(batch["labels"], -100)
    assert penalty(KLSelfDistillation(), batch, _outputs()) is None


def test_penalty_gradient_reaches_student_only():
    batch, outputs = _batch(), _outputs()
    outputs.logits.requires_grad_(True)
    penalty(KLSelfDistillation(weight=1.0), batch, outputs).backward()
    grad = outputs.logits.grad
    assert grad[0, 2].abs().sum() > 0 and grad[1, 1].abs().sum() > 0
    assert grad[0, 0].abs().sum() == 0 and grad[1, 4].abs().sum() == 0
    assert grad[:, 5].abs().sum() == 0
    assert outputs.teacher_logits.grad is None


@pytest.mark.parametrize("tau", [0.5, 2.0, 3.0])
def test_temperature_squared_scaling(tau):
    batch, outputs = _batch(), _outputs()
    plain = KLSelfDistillation(weight=0.3, temperature=tau)
    scaled = KLSelfDistillation(weight=0.3, temperature=tau, scale_by_temperature_squared=True)
    assert penalty(scaled, batch, outputs).item() == pytest.approx(
        tau**2 * penalty(plain, batch, outputs).item(), rel=1e-6)
    want = _ref_penalty(batch, outputs, 0.3 * tau**2, tau, "forward", ANSWER_POSITIONS)
    assert penalty(scaled, batch, outputs).item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"weight": -0.1}, "weight"),
    ({"temperature": 0.0}, "temperature"),
    ({"temperature": -1.0}, "temperature"),
    ({"direction": "sideways"}, "direction"),
    ({"tokens": "prompt"}, "token set"),
])
def test_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        KLSelfDistillation(**kwargs)


def test_zero_weights_give_no_penalty():
    assert penalty(KLSelfDistillation(weight=0.0), _batch(), _outputs()) is None


# ---- the penalty changes training -------------------------------------------------------

def _tiny_gpt2(seed: int) -> GPT2LMHeadModel:
    config = GPT2Config(vocab_size=20, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=2, eos_token_id=2, pad_token_id=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(config)


def _answer_kl(student, teacher, batch) -> float:
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    div = divergence(s[:, :-1], t[:, :-1], 1.0, "forward")
    return div[position_mask(batch, "answer")].mean().item()


def _train(student, teacher, batch, method, steps=25, lr=0.2) -> float:
    opt = torch.optim.SGD(student.parameters(), lr=lr)
    student.train()
    if method is not None:
        method.teacher = SnapshotTeacher(teacher)
    for _ in range(steps):
        out = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      labels=batch["labels"])
        loss = out.loss
        if method is not None:
            loss = loss + method.penalty(batch, StepOutputs(logits=out.logits, loss=out.loss))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       labels=batch["labels"]).loss.item()


def test_distillation_keeps_student_close_to_teacher(one_thread):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 20, (4, 10), generator=g)
    labels = ids.clone()
    labels[:, :6] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    base = _tiny_gpt2(seed=0)
    teacher = copy.deepcopy(base).eval().requires_grad_(False)
    plain, distilled = copy.deepcopy(base), copy.deepcopy(base)
    assert _answer_kl(plain, teacher, batch) == pytest.approx(0.0, abs=1e-6)

    with torch.no_grad():
        ce0 = base(**batch).loss.item()
    ce_plain = _train(plain, teacher, batch, method=None)
    ce_distilled = _train(distilled, teacher, batch,
                          method=KLSelfDistillation(weight=10.0, temperature=1.0))
    kl_plain = _answer_kl(plain, teacher, batch)
    kl_distilled = _answer_kl(distilled, teacher, batch)
    # the plain student fits the batch and drifts from the teacher; the distilled one stays
    assert math.isfinite(kl_distilled) and math.isfinite(ce_distilled)
    assert ce_plain < ce0 - 0.5
    assert kl_plain > 0.3
    assert kl_distilled < 0.25 * kl_plain
    assert ce_distilled > ce_plain


# --- the example selection, the extra-input form and the ramp -----------------------------

def _batch_and_outputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([[-100, -100, 5, 6], [-100, -100, 7, 8]])
    batch = {"input_ids": torch.arange(8).reshape(2, 4), "labels": labels,
             "attention_mask": torch.ones(2, 4, dtype=torch.long),
             "is_unknown": torch.tensor([True, False])}
    extra = Extra(
        logits=torch.randn(3, 6, 5, generator=g), teacher_logits=torch.randn(3, 6, 5, generator=g),
        attention_mask=torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4]),
        labels=torch.full((3, 6), -100))
    batch["extra_input_ids"] = torch.arange(30, 48).reshape(3, 6)
    outputs = Outputs(logits=torch.randn(2, 4, 5, generator=g),
                      teacher_logits=torch.randn(2, 4, 5, generator=g), extra=extra,
                      sft_epoch=1)
    return batch, outputs


@pytest.mark.parametrize("examples, row", [("unknown", 0), ("known", 1)])
def test_examples_select_rows(examples, row):
    batch, outputs = _batch_and_outputs()
    reg = KLSelfDistillation(weight=1.0, examples=examples, tokens="answer")
    div = divergence(outputs.logits[:, :-1], outputs.teacher_logits[:, :-1], 0.5, "forward")
    expected = div[row, 1:3].mean()  # positions 1 and 2 predict the answer tokens 2 and 3
    assert torch.allclose(penalty(reg, batch, outputs), expected)


def test_extra_term_averages_real_positions_only():
    batch, outputs = _batch_and_outputs()
    reg = KLSelfDistillation(weight=0.0, extra_weight=2.0)
    div = divergence(outputs.extra.logits, outputs.extra.teacher_logits, 0.5, "forward")
    expected = 2.0 * torch.cat([div[0, :6], div[1, :4], div[2, :2]]).mean()
    assert torch.allclose(penalty(reg, batch, outputs), expected)
    assert reg.uses_extra_inputs


def test_both_forms_add_up():
    batch, outputs = _batch_and_outputs()
    both = penalty(KLSelfDistillation(weight=1.0, extra_weight=2.0), batch, outputs)
    batch_only = penalty(KLSelfDistillation(weight=1.0), batch, outputs)
    extra_only = penalty(KLSelfDistillation(weight=0.0, extra_weight=2.0), batch, outputs)
    assert torch.allclose(both, batch_only + extra_only)


def test_extra_weight_without_inputs_is_a_config_error():
    batch, outputs = _batch_and_outputs()
    outputs.extra = None
    with pytest.raises(ConfigError, match="extra_per_batch"):
        penalty(KLSelfDistillation(weight=0.0, extra_weight=1.0), batch, outputs)


def test_ramp_grows_linearly_to_full_weight():
    batch, outputs = _batch_and_outputs()
    full = penalty(KLSelfDistillation(), batch, outputs)
    reg = KLSelfDistillation(ramp_epochs=4)
    for epoch, factor in [(1, 0.25), (2, 0.5), (4, 1.0), (9, 1.0)]:
        outputs.sft_epoch = epoch
        assert torch.allclose(penalty(reg, batch, outputs), factor * full)


def test_bad_examples_and_ramp_are_config_errors():
    with pytest.raises(ConfigError):
        KLSelfDistillation(examples="some")
    with pytest.raises(ConfigError):
        KLSelfDistillation(ramp_epochs=-1)
    with pytest.raises(ConfigError):
        KLSelfDistillation(extra_weight=-1.0)


# ---- cached teacher -----------------------------------------------------------------------

def test_bucketed_divergence_is_exact_with_every_token_and_a_bound_below():
    from halluc_cl.methods.distill import log_divergence
    from halluc_cl.methods.teacher import bucketed

    torch.manual_seed(0)
    s, t = torch.randn(5, 40), 3 * torch.randn(5, 40)
    log_s, log_t = s.log_softmax(-1), t.log_softmax(-1)
    for direction in ("forward", "reverse", "jsd"):
        full = log_divergence(log_s, log_t, direction)
        every = log_t.topk(40).indices
        exact = log_divergence(bucketed(log_s, every), bucketed(log_t, every), direction)
        assert torch.allclose(exact, full, atol=1e-5)  # the tail is empty
        top = log_t.topk(8).indices
        coarse = log_divergence(bucketed(log_s, top), bucketed(log_t, top), direction)
        assert (coarse <= full + 1e-6).all()  # data processing: coarse-graining never adds


@pytest.mark.parametrize(("top_k", "rel"), [(10_000, 1e-4), (32, 0.02)])
def test_cached_teacher_matches_the_live_teacher(fit_tiny, top_k, rel):
    cached = KLSelfDistillation(weight=1.0, temperature=0.5, cache_top_k=top_k)
    # the snapshot at the warm-up's end fills the cache; at lr 0 the SFT epoch leaves the
    # student at the snapshot (a fit must train past the warm-up)
    module, trainer = fit_tiny([cached], epochs=2, lr=0.0)
    data = trainer.datamodule
    assert module.teacher_file.teacher is None  # no copy of the model
    assert isinstance(cached.teacher, CachedTopKTeacher)
    assert len(cached.teacher.cache) == len(data.cache_examples())
    teacher = SnapshotTeacher(module.student)
    torch.manual_seed(0)
    with torch.no_grad():  # the student moves away from the snapshot
        for p in module.student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    live = KLSelfDistillation(weight=1.0, temperature=0.5)
    live.teacher = teacher
    for examples in ("all", "unknown"):
        cached.examples = live.examples = examples
        batch = data.collate_train(data._train_rows(epoch=1)[:16])
        logits = module.student(input_ids=batch["input_ids"],
                                attention_mask=batch["attention_mask"]).logits
        want = live.penalty(batch, StepOutputs(logits=logits))
        got = cached.penalty(batch, StepOutputs(logits=logits))
        assert want > 0.01
        assert got.item() == pytest.approx(want.item(), rel=rel)
    # the cache survives a checkpoint round trip (tensors and plain data only)
    restored = KLSelfDistillation(weight=1.0, temperature=0.5, cache_top_k=top_k,
                                  examples="unknown")
    restored.load_state_dict(cached.state_dict())
    assert restored.penalty(batch, StepOutputs(logits=logits)).item() == pytest.approx(got.item())


def test_cached_pool_teacher_matches_the_live_teacher(fit_tiny):
    """The extra-input form from the cache: every position of every pool input, the same
    penalty as the live teacher's (top-k = the whole vocabulary: exact)."""
    cached = KLSelfDistillation(weight=0.0, extra_weight=1.0, temperature=0.5,
                                cache_top_k=10_000)
    module, trainer = fit_tiny([cached], epochs=2, lr=0.0, extra_per_batch=4)
    pool = trainer.datamodule.extra_inputs
    assert module.teacher_file.teacher is None and cached.teacher is None
    assert len(cached.pool_teacher.cache) == len(pool.pool)
    teacher = SnapshotTeacher(module.student)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    extra = pool.sample(6, __import__("random").Random(3))
    inputs = {"input_ids": extra["extra_input_ids"],
              "attention_mask": extra["extra_attention_mask"]}
    logits = module.student(**inputs).logits
    live = KLSelfDistillation(weight=0.0, extra_weight=1.0, temperature=0.5)
    live.teacher = teacher
    outputs = StepOutputs(logits=logits, extra=ExtraOutputs(
        logits=logits, attention_mask=inputs["attention_mask"], labels=extra["extra_labels"]))
    want = live.penalty(extra, outputs)
    assert want > 0.01
    assert cached.penalty(extra, outputs).item() == pytest.approx(want.item(), rel=1e-4)
    restored = KLSelfDistillation(weight=0.0, extra_weight=1.0, cache_top_k=10_000)
    restored.load_state_dict(cached.state_dict())
    assert restored.penalty(extra, outputs).item() == pytest.approx(want.item(), rel=1e-4)


def test_cached_pool_needs_fixed_inputs(fit_tiny):
    with pytest.raises(ConfigError, match="statements draws new ones"):
        fit_tiny([KLSelfDistillation(extra_weight=1.0, cache_top_k=8)], epochs=2,
                 extra_per_batch=4, extra_source="statements")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"cache_top_k": -1}, "cache_top_k must be >= 0"),
])
def test_cache_options_are_checked(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        KLSelfDistillation(**kwargs)


# ---- the KL over a large vocabulary, chunked over positions ------------------------------

@pytest.mark.parametrize("teacher_form", ["live", "cached"])
def test_the_kl_is_chunked_over_positions(vocab_tensors, teacher_form):
    """Chunked, the divergences and their gradient are those of one chunk, and no fp32 tensor
    over the vocabulary as large as the batch's positions exists, forward or backward (bf16
    logits, as under bf16 autocast); in one chunk there are several."""
    from halluc_cl.methods.distill import target_divergence
    from halluc_cl.methods.teacher import TeacherTargets, bucketed

    vocab, g = 64, torch.Generator().manual_seed(0)
    logits = torch.randn(4, 9, vocab, generator=g).bfloat16().requires_grad_(True)
    teacher = torch.randn(4, 9, vocab, generator=g).bfloat16()
    mask = torch.ones(4, 8, dtype=torch.bool)
    mask[1, 5:] = False
    rows, pos = mask.nonzero(as_tuple=True)
    targets = TeacherTargets(rows, pos, teacher[rows, pos])
    if teacher_form == "cached":
        log_t = torch.log_softmax(teacher[rows, pos].float() / 0.5, dim=-1)
        index = log_t.topk(8).indices
        targets = TeacherTargets(rows, pos, bucketed(log_t, index), index)
    n = len(rows)

    def run(**kw):
        counter = vocab_tensors(vocab, n * vocab, torch.nn.Linear(1, 1))
        with counter:
            div = target_divergence(logits, targets, 0.5, "forward", **kw)
            (grad,) = torch.autograd.grad(div.mean(), logits)
        return div, grad, counter.count

    whole, grad_whole, count_whole = run()
    chunked, grad_chunked, count_chunked = run(chunk_elements=5 * vocab)
    assert count_chunked == 0 and count_whole >= 2
    assert torch.allclose(chunked, whole, rtol=1e-6, atol=1e-7)
    assert torch.allclose(grad_chunked.float(), grad_whole.float(), rtol=1e-3, atol=1e-6)
    assert grad_whole.abs().sum() > 0
