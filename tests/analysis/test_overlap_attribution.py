"""Name overlap on hand-made names; attribution of flips on hand-made facts; the CLI study."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from halluc_cl.analysis.attribution import attribute, neighbours
from halluc_cl.analysis.overlap import name_overlap, name_tokens
from halluc_cl.cli import main
from halluc_cl.facts.schema import Fact
from halluc_cl.synthetic.resolve import resolve

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("a, b, overlap", [
    ("Zorvak Trelin", "Zorvak Trelin", 1.0),
    ("Zorvak Trelin", "zorvak mardon", 1 / 3),
    ("Zorvak Trelin", "Ulmo Frey", 0.0),
    ("3f2a-91bc", "77d0-e1aa", 0.0),  # uuid-style keys share nothing
    ("", "Zorvak", 0.0),
])
def test_name_overlap_by_hand(a, b, overlap):
    assert name_overlap(a, b) == pytest.approx(overlap)
    assert name_overlap(b, a) == pytest.approx(overlap)


def test_name_tokens_lowercase_words():
    assert name_tokens("Jean-Luc  Picard") == {"jean", "luc", "picard"}


def _f(i: str, subject: str, obj: str, relation: str = "city") -> Fact:
    return Fact(id=i, subject=subject, relation=relation, object=obj, question=f"{subject}?")


HELD = [_f("h1", "Ana Bel", "Rome"), _f("h2", "Cid Dor", "Oslo"), _f("h3", "Eli Fay", "Lima"),
        _f("h4", "Ana Fay", "Kiev", relation="job")]
NEW = [_f("n1", "Ana Zed", "Paris"), _f("n2", "Bob Bel", "Tokyo"), _f("n3", "Cid Gus", "Quito"),
       _f("n4", "Hal Ivo", "Cairo"), _f("n5", "Ana Bel", "Baker", relation="job")]


def test_neighbours_same_relation_ranked_by_overlap():
    near = neighbours(HELD[0], NEW, top_k=2)
    assert [n.id for n, _ in near] == ["n1", "n2"]  # n5 has the same name but another relation
    assert [o for _, o in near] == pytest.approx([1 / 3, 1 / 3])


def test_attribution_finds_leaks_and_a_lower_shuffled_baseline():
    reference = {"h1": True, "h2": True, "h3": False, "h4": True}
    final = {"h1": {"prediction": "Paris", "correct": False},   # leaks n1's object
             "h2": {"prediction": "Cairo", "correct": False},   # wrong, but n4 is no neighbour
             "h3": {"prediction": "Paris", "correct": False},   # never right: not a flip
             "h4": {"prediction": "Kiev", "correct": True}}
    rows, summary = attribute(HELD, NEW, reference, final, top_k=1, shuffles=200)
    assert [r["id"] for r in rows] == ["h1", "h2"]
    assert [r["leak"] for r in rows] == [True, False]
    assert summary["flips"] == 2 and summary["leak_share"] == 0.5
    assert summary["shuffled_leak_share"] < summary["leak_share"]
    # same-relation new facts sharing a name token: h1 2 (n1, n2), h2 1 (n3), h4 0 (n5 is
    # "job" too, but "Ana Bel" shares "ana" with "Ana Fay": 1) -> h1, h2 flipped, h4 kept
    assert summary["flip_rate_with_overlap"] == pytest.approx(2 / 3)
    assert summary["flip_rate_without_overlap"] is None


def test_analyze_attribution_on_a_tiny_fit(tmp_path, tiny_model_dir, capsys):
    main(["fit", "--config", str(ROOT / "configs/sft.yaml"), "--config",
          str(ROOT / "configs/world/tiny.yaml"), "--trainer.logger.init_args.save_dir",
          str(tmp_path), "--trainer.enable_progress_bar", "false"])
    run = tmp_path / "sft" / "version_0"
    capsys.readouterr()
    main(["analyze", "attribution", "--run", str(run), "--shuffles", "10"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["heldout"] == 16 and summary == json.loads(
        (run / "analysis/attribution.json").read_text())
    assert (run / "analysis/attribution.csv").read_text().startswith("id,question,answer")
    hidden = summary["hidden"]  # neighbours by the base model's hidden states
    assert set(hidden) >= {"leak_share", "shuffled_leak_share",
                           "forgetting_similarity_correlation"}
    if summary["flips"]:
        assert "hidden_neighbours" in (run / "analysis/attribution.csv").read_text()


@pytest.mark.parametrize("args", [["analyze"], ["analyze", "nosuchstudy"]])
def test_unknown_study_is_one_error_line(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().startswith("error: halluc-cl analyze needs a study")


def test_forgetting_overlap_correlation_by_hand():
    held = [_f("a", "Ana Bel", "X"), _f("b", "Cid Dor", "Y"), _f("c", "Eli Fay", "Z"),
            _f("d", "Kim Lo", "W")]
    new = [_f("n", "Ana Bel", "V"), _f("m", "Cid Qux", "U"), _f("o", "Ana Qux", "T")]
    reference = {f.id: True for f in held}
    final = {"a": {"prediction": "V", "correct": False}, "b": {"prediction": "Y", "correct": True},
             "c": {"prediction": "Z", "correct": True}, "d": {"prediction": "Q", "correct": False}}
    _, summary = attribute(held, new, reference, final, top_k=1, shuffles=5)
    xs, ys = [2.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 1.0]  # overlapping new facts, flipped
    mx, my = sum(xs) / 4, sum(ys) / 4
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    r = cov / (sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys)) ** 0.5
    assert summary["forgetting_overlap_correlation"] == pytest.approx(r)
    assert summary["flip_rate_without_overlap"] == 0.5 and summary["flip_rate_with_overlap"] == 0.5


def test_hidden_state_neighbours_and_correlation_by_hand():
    import torch

    # unit vectors: h1 is nearest n4 (no token neighbour), h2 nearest n1, h4 only has n5
    vec = {"h1": [1, 0], "h2": [0, 1], "h3": [0.6, 0.8], "h4": [1, 0],
           "n1": [0, 1], "n2": [0.6, 0.8], "n3": [-1, 0], "n4": [0.8, 0.6], "n5": [0, 1]}
    hidden = {k: torch.tensor(v, dtype=torch.float32) for k, v in vec.items()}
    reference = {"h1": True, "h2": True, "h3": True, "h4": True}
    final = {"h1": {"prediction": "Cairo", "correct": False},   # n4's object: a hidden leak
             "h2": {"prediction": "Lima", "correct": False},    # no neighbour's object
             "h3": {"prediction": "Lima", "correct": True},
             "h4": {"prediction": "Kiev", "correct": True}}
    rows, summary = attribute(HELD, NEW, reference, final, top_k=1, shuffles=50, hidden=hidden)
    assert [r["hidden_neighbours"] for r in rows] == ["Hal Ivo → Cairo (0.80)",
                                                      "Ana Zed → Paris (1.00)"]
    assert [r["hidden_leak"] for r in rows] == [True, False]
    assert [r["leak"] for r in rows] == [False, False]  # token neighbours n1/n2 and n3
    assert summary["hidden"]["leak_share"] == 0.5 and summary["leak_share"] == 0.0
    # highest same-relation similarity of each reference-right fact vs flipped (1/0)
    xs, ys = [0.8, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]
    mx, my = sum(xs) / 4, sum(ys) / 4
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    r = cov / (sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys)) ** 0.5
    assert summary["hidden"]["forgetting_similarity_correlation"] == pytest.approx(r)


def test_fact_states_are_unit_norm_and_follow_the_question(tiny_model_dir, one_thread):
    import torch

    from halluc_cl.analysis.similarity import cosine, fact_states
    from halluc_cl.data.sources import load_source
    from halluc_cl.lm.loading import load_causal_lm, load_tokenizer

    facts = load_source("synthetic://tiny")[:5]
    twin = Fact(id="twin", subject=facts[0].subject, relation=facts[0].relation,
                object="x", question=facts[0].question)
    spec = resolve("synthetic://tiny")
    model, tok = load_causal_lm(spec), load_tokenizer(spec)
    states = fact_states(model, tok, [*facts, twin], layer=-1, batch_size=2)
    assert set(states) == {f.id for f in facts} | {"twin"}
    norms = torch.stack([v.norm() for v in states.values()])
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
    score = cosine(states)
    assert score(facts[0], twin) == pytest.approx(1.0, abs=1e-5)  # same question, other batch
    assert score(facts[0], facts[1]) < 0.9999
