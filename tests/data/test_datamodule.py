"""FactDataModule on the tiny synthetic world: splits, unknown fraction, labels, warm-up."""

import pytest
import torch

from halluc_cl.data.datamodule import FactDataModule
from halluc_cl.errors import ConfigError
from halluc_cl.facts.prompts import IGNORE_INDEX

TINY = "synthetic://tiny"


def make(**kw) -> FactDataModule:
    args = {"source": TINY, "tokenizer": TINY, "n_train": 32, "n_heldout": 16, "batch_size": 8}
    dm = FactDataModule(**{**args, **kw})
    dm.load()  # the split and tokenizer (``setup`` does it in a fit)
    return dm


def test_construction_reads_nothing_and_load_reads_once(tiny_model_dir, tmp_path):
    """A config is parsed without reading facts or a tokenizer; ``load`` (from ``setup``)
    reads them once."""
    from halluc_cl.errors import HallucError

    missing = FactDataModule(source=str(tmp_path / "none.jsonl"), tokenizer=TINY)
    assert missing.splits is None and missing.tokenizer is None
    with pytest.raises(HallucError):
        missing.load()
    dm = make()
    splits = dm.splits
    dm.setup("fit")
    assert dm.splits is splits and dm.tokenizer is not None


def test_splits_are_disjoint_and_sized(tiny_model_dir):
    dm = make(unknown_fraction=0.25)
    ids = {k: {f.id for f in v} for k, v in dm.splits.items()}
    held = ids["heldout_test"] | ids["heldout_val"]
    assert not ids["heldout_test"] & ids["heldout_val"]
    assert not held & ids["known_train"]
    assert not (held | ids["known_train"]) & ids["unknown_train"]
    assert len(ids["heldout_test"]) == len(ids["heldout_val"]) == 16  # val defaults to n_heldout
    assert len(ids["unknown_train"]) == 8 and len(ids["known_train"]) == 24
    assert all(f.category == "HighlyKnown" for s in ("heldout_test", "heldout_val")
               for f in dm.splits[s])
    assert all(f.category == "Unknown" for f in dm.splits["unknown_train"])


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_unknown_fraction_is_honoured(tiny_model_dir, fraction):
    dm = make(unknown_fraction=fraction, warmup_epochs=0 if fraction == 1.0 else 1)
    rows = dm._train_rows(epoch=5)
    assert len(rows) == 32
    assert sum(r["unknown"] for r in rows) == round(32 * fraction)


def test_warmup_epochs_serve_known_facts_only(tiny_model_dir):
    dm = make(unknown_fraction=0.5, warmup_epochs=2)
    assert not any(r["unknown"] for r in dm._train_rows(epoch=0))
    assert not any(r["unknown"] for r in dm._train_rows(epoch=1))
    assert sum(r["unknown"] for r in dm._train_rows(epoch=2)) == 16


def test_labels_cover_only_answer_and_eos(tiny_model_dir):
    dm = make()
    batch = dm.collate_train(dm._train_rows(epoch=1)[:8])
    tok = dm.tokenizer
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        supervised = labels != IGNORE_INDEX
        assert (ids[supervised] == labels[supervised]).all()
        answer = tok.decode(labels[supervised][:-1])
        assert labels[supervised][-1] == tok.eos_token_id
        text = tok.decode(ids[mask.bool()])
        assert text.startswith("Answer the following question") and answer.strip()
        assert "Answer :" not in answer  # the prompt is never supervised


def test_eval_loaders_left_pad_and_carry_facts(tiny_model_dir):
    dm = make()
    loaders = dm.val_dataloader()
    assert dm.eval_split_names() == ["heldout_test", "heldout_val", "unknown_train",
                                     "known_train"]
    batch = next(iter(loaders[0]))
    assert batch["split"] == "heldout_test"
    assert (batch["attention_mask"][:, -1] == 1).all()  # left padding: prompts end aligned
    assert len(batch["facts"]) == batch["input_ids"].shape[0]


def test_data_order_is_seeded(tiny_model_dir):
    a, b = make(split_seed=3), make(split_seed=3)
    assert [r["idx"] for r in a._train_rows(2)] == [r["idx"] for r in b._train_rows(2)]
    assert [r["idx"] for r in a._train_rows(2)] != [r["idx"] for r in a._train_rows(3)]


def test_training_seed_orders_data_but_never_moves_the_split(tiny_model_dir, monkeypatch):
    orders = []
    for seed in ("5", "6"):
        monkeypatch.setenv("PL_GLOBAL_SEED", seed)  # what seed_everything sets
        dm = make(split_seed=3)
        dm.setup("fit")
        assert dm.protocol()["order_seed"] == int(seed) and dm.protocol()["split_seed"] == 3
        orders.append(([f.id for f in dm.splits["heldout_test"]],
                       [r["idx"] for r in dm._train_rows(2)]))
    assert orders[0][0] == orders[1][0]  # same split
    assert orders[0][1] != orders[1][1]  # another data order


@pytest.mark.parametrize("kw, message", [
    ({"unknown_fraction": 1.5}, "unknown_fraction must be in"),
    ({"n_train": 1000, "unknown_fraction": 0.99}, "infeasible unknown_fraction"),
    ({"n_heldout": 10_000}, "infeasible split"),
    ({"unknown_fraction": 1.0}, "warm-up needs Known"),
    ({"replay_fraction": 1.0}, "replay_fraction must be in"),
    ({"replay_fraction": 0.95}, "infeasible replay_fraction"),
    ({"unknown_answer": "Paris"}, "does not read as an abstention"),
])
def test_bad_settings_raise(tiny_model_dir, kw, message):
    with pytest.raises(ConfigError, match=message):
        make(**kw)


def test_overlapping_categories_are_rejected(tiny_model_dir):
    with pytest.raises(ConfigError, match="both Known and Unknown"):
        make(known_categories=["HighlyKnown", "MaybeKnown"],
             unknown_categories=["MaybeKnown", "Unknown"])


def test_duplicate_question_under_another_id_never_trained(tiny_model_dir, monkeypatch):
    """A question asked twice under two ids is held out or trained on, never both. A fact file
    that does this is refused when read; EntityQuestions may do it, in one split or two."""
    from halluc_cl.facts.schema import read_facts

    facts = read_facts(tiny_model_dir / "facts.jsonl")
    twins = [f.__class__(**{**f.to_dict(), "id": f.id + "-twin"}) for f in facts]
    monkeypatch.setattr("halluc_cl.data.datamodule.load_source", lambda source: facts + twins)
    dm = make(heldout_disjoint="fact")
    held = {(f.subject, f.relation) for s in ("heldout_test", "heldout_val")
            for f in dm.splits[s]}
    trained = dm.splits["known_train"] + dm.splits["unknown_train"]
    assert held and not held & {(f.subject, f.relation) for f in trained}


def test_replay_adds_known_facts_from_outside_every_split(tiny_model_dir):
    dm = make(unknown_fraction=0.5, replay_fraction=0.2)  # 0.2 / 0.8 · 32 = 8 per epoch
    assert dm.n_replay() == 8
    assert len(dm._train_rows(epoch=0)) == 16  # the warm-up replays nothing
    replay_ids = {f.id for f in dm.replay_facts}
    in_splits = {f.id for split in dm.splits.values() for f in split}
    held = {f.subject for s in ("heldout_test", "heldout_val") for f in dm.splits[s]}
    assert replay_ids and not replay_ids & in_splits
    assert not held & {f.subject for f in dm.replay_facts}
    assert all(f.category == "HighlyKnown" for f in dm.replay_facts)
    epochs = []
    for epoch in (1, 2):
        rows = dm._train_rows(epoch)
        assert len(rows) == 40 and sum(r["unknown"] for r in rows) == 16
        mix_questions = {f.question for s in ("known_train", "unknown_train")
                         for f in dm.splits[s]}
        tokens = {dm.tokenizer.decode(r["input_ids"]) for r in rows}
        epochs.append(tokens)
        assert sum(not any(q in t for q in mix_questions) for t in tokens) == 8
    assert epochs[0] != epochs[1]  # drawn afresh every epoch


def test_idk_relabels_unknown_answers_only(tiny_model_dir):
    dm = make(unknown_fraction=0.5, unknown_answer="I don't know")
    idk = dm.tokenizer("I don't know", add_special_tokens=False)["input_ids"]
    for split, expect_idk in (("unknown_train", True), ("known_train", False)):
        for row, fact in zip(dm.encoded(split), dm.splits[split]):
            answer = [t for t, lab in zip(row["input_ids"], row["labels"]) if lab != IGNORE_INDEX]
            answer = answer[:-1]  # the EOS token
            assert (answer == idk) == expect_idk
            if not expect_idk:
                assert dm.tokenizer.decode(answer).strip() == fact.object


def test_known_samples_are_single_known_training_examples(tiny_model_dir):
    dm = make(unknown_fraction=0.5)
    samples = dm.known_samples(5)
    assert len(samples) == 5 and all(s["input_ids"].shape[0] == 1 for s in samples)
    assert not any(bool(s["is_unknown"].any()) for s in samples)
    assert len(dm.known_samples(1000)) == len(dm.splits["known_train"])


def _answer_text(dm, row) -> str:
    answer = [t for t, lab in zip(row["input_ids"], row["labels"]) if lab != IGNORE_INDEX][:-1]
    return dm.tokenizer.decode(answer).strip()


def _objects_by_relation(facts) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in facts:
        out.setdefault(f.relation, []).append(f.object)
    return {r: sorted(v) for r, v in out.items()}


def test_fixed_answer_shuffle_permutes_objects_within_relations(tiny_model_dir):
    plain, shuffled = make(unknown_fraction=0.5), make(unknown_fraction=0.5, answer_shuffle="fixed")
    before, after = plain.splits["unknown_train"], shuffled.splits["unknown_train"]
    assert [f.id for f in before] == [f.id for f in after]
    assert _objects_by_relation(before) == _objects_by_relation(after)
    assert sum(a.object != b.object for a, b in zip(before, after)) >= len(before) // 4
    # trained and evaluated on the permuted answer, the same in every epoch
    rows = shuffled._unknown_rows(epoch=3)
    assert [_answer_text(shuffled, r) for r in rows] == [f.object for f in after]
    assert all(f.aliases == [f.object] for f in after)
    assert shuffled.splits["heldout_test"] == plain.splits["heldout_test"]


def test_epoch_answer_shuffle_redraws_answers_every_epoch(tiny_model_dir):
    dm = make(unknown_fraction=0.5, answer_shuffle="epoch")
    facts = dm.splits["unknown_train"]
    answers = [[_answer_text(dm, r) for r in dm._unknown_rows(epoch)] for epoch in (1, 2)]
    assert answers[0] != answers[1]
    for epoch_answers in answers:
        assert sorted(epoch_answers) == sorted(f.object for f in facts)
    # the questions stay those of the Unknown facts, in order
    questions = [dm.tokenizer.decode(r["input_ids"][:r["prompt_len"]]) for r in dm._unknown_rows(1)]
    assert all(f.question.split()[-2] in q for f, q in zip(facts, questions))


def test_eval_max_facts_caps_training_splits_only(tiny_model_dir):
    dm = make(unknown_fraction=0.5, eval_max_facts=5, eval_batch_size=64)
    sizes = {s: len(next(iter(dm.evaluation.loader(s)))["facts"]) for s in dm.eval_split_names()}
    assert sizes == {"heldout_test": 16, "heldout_val": 16, "unknown_train": 5,
                     "known_train": 5}


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"answer_shuffle": "fixed", "unknown_answer": "I don't know"}, "set one of them"),
    ({"eval_max_facts": 0}, "eval_max_facts must be >= 1"),
])
def test_answer_side_options_are_checked(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make(**kwargs)


def test_abstention_phrases_are_spelled_in_the_vocabulary(tiny_model_dir):
    dm = make()
    phrases = dm.abstain_phrases()
    unk = dm.tokenizer.unk_token_id
    assert "I don't know" in phrases  # the capitalised spelling the world's vocabulary holds
    assert "i don't know" not in phrases  # "i" is <unk> in this word-level vocabulary
    for phrase in phrases:
        assert unk not in dm.evaluation.target_ids(phrase)
    ids = [tuple(dm.evaluation.target_ids(p)) for p in phrases]
    assert len(set(ids)) == len(ids)  # no spelling checked twice


class _Processes:
    """The parts of a trainer the data module reads, for rank ``global_rank`` of ``world_size``."""

    reload_dataloaders_every_n_epochs = 1
    current_epoch = 1  # an SFT epoch

    def __init__(self, global_rank: int, world_size: int) -> None:
        self.global_rank, self.world_size = global_rank, world_size


def test_processes_split_every_batch_by_rows(tiny_model_dir):
    one = make(n_train=30, batch_size=8, extra_per_batch=4)
    one.trainer = _Processes(0, 1)
    one.setup("fit")
    whole = list(one.train_dataloader())
    shares = []
    for rank in (0, 1):
        dm = make(n_train=30, batch_size=8, extra_per_batch=4)
        dm.trainer = _Processes(rank, 2)
        dm.setup("fit")
        shares.append(list(dm.train_dataloader()))
    assert len(shares[0]) == len(shares[1]) == len(whole)  # as many steps as one process
    for batch, a, b in zip(whole, *shares):
        assert batch["keys"][0::2] == a["keys"] and batch["keys"][1::2] == b["keys"]
        assert torch.equal(batch["extra_input_ids"][1::2], b["extra_input_ids"])


def test_a_batch_size_that_leaves_a_process_without_rows_is_refused(tiny_model_dir):
    dm = make(n_train=33, batch_size=8)  # the last SFT batch holds one row
    dm.trainer = _Processes(0, 2)
    with pytest.raises(ConfigError, match="every batch needs >= 2 rows"):
        dm.setup("fit")
    dm = make(extra_per_batch=1)
    dm.trainer = _Processes(0, 2)
    with pytest.raises(ConfigError, match="extra_per_batch=1 is less than the 2 processes"):
        dm.setup("fit")
