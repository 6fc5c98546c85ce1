"""Hallucination attribution: which new training facts a flipped held-out fact resembles, and
whether its wrong answer is theirs (answer leakage).

    halluc-cl analyze attribution --run runs/sft/version_0            # → <run>/analysis/

For every held-out Known fact the snapshot answered right and the final model answers wrong
(a flip), the ``top_k`` new training facts (``unknown_train``) of the same relation whose
subjects share the most name tokens are its neighbours; with ``hidden`` states, the ``top_k``
whose questions the base model represents most alike (cosine of hidden states, see
``analysis/similarity.py``) are a second set. A flip *leaks* when its wrong answer is exactly
the object of one of its neighbours. The baseline pairs each flip with the neighbours of a
random other held-out fact (``shuffles`` times): the leak share expected when similarity plays
no role.
"""

from __future__ import annotations

import csv
import io
import json
import random
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from halluc_cl.analysis.overlap import name_overlap
from halluc_cl.analysis.similarity import cosine
from halluc_cl.errors import ConfigError
from halluc_cl.facts.matching import exact_match
from halluc_cl.facts.schema import Fact
from halluc_cl.io import atomic_write_text


def token_overlap(a: Fact, b: Fact) -> float:
    """Name-token overlap of two facts' subjects."""
    return name_overlap(a.subject, b.subject)


def neighbours(fact: Fact, new_facts: list[Fact], top_k: int,
               score: Callable[[Fact, Fact], float] = token_overlap) -> list[tuple[Fact, float]]:
    """The ``top_k`` new facts of ``fact``'s relation with the highest ``score`` (ties: id);
    the default score is the name overlap of the subjects."""
    same = [(n, score(fact, n)) for n in new_facts if n.relation == fact.relation]
    return sorted(same, key=lambda pair: (-pair[1], pair[0].id))[:top_k]


def leaks(prediction: str, near: list[tuple[Fact, float]]) -> bool:
    """Whether ``prediction`` is exactly the object of one of the neighbours."""
    return any(exact_match(prediction, [n.object]) for n, _ in near)


def attribute(held: list[Fact], new_facts: list[Fact], reference: dict[str, bool],
              final: dict[str, dict], top_k: int = 3, shuffles: int = 100, seed: int = 0,
              hidden: dict[str, torch.Tensor] | None = None) -> tuple[list[dict], dict]:
    """Rows for every flip and a summary (leak share vs the shuffled baseline).

    Args:
        held: Held-out Known facts.
        new_facts: The new (Unknown) training facts.
        reference: Held-out fact id -> answered right at the reference evaluation.
        final: Held-out fact id -> its final prediction record (``prediction``, ``correct``).
        top_k: Neighbours per flip.
        shuffles: Random re-pairings for the baseline.
        seed: Seed of the re-pairings.
        hidden: Unit-norm hidden states by fact id (``similarity.fact_states``) of every held
            and new fact; adds hidden-state neighbours (``hidden_*`` columns) and the
            ``hidden`` summary.
    """
    measures = {"tokens": token_overlap}
    if hidden is not None:
        measures["hidden"] = cosine(hidden)
    flips = [f for f in held if reference.get(f.id) and f.id in final
             and not final[f.id]["correct"]]
    rows = [{"id": f.id, "question": f.question, "answer": f.object,
             "prediction": final[f.id]["prediction"]} for f in flips]
    right = [f for f in held if reference.get(f.id) and f.id in final]
    flipped = [float(not final[f.id]["correct"]) for f in right]
    summary = {"heldout": len(held), "reference_right": sum(bool(reference.get(f.id)) for f in held),
               "flips": len(flips), "top_k": top_k}
    for name, score in measures.items():
        near = {f.id: neighbours(f, new_facts, top_k, score) for f in held}
        prefix = "" if name == "tokens" else f"{name}_"
        for row, f in zip(rows, flips):
            row[f"{prefix}leak"] = leaks(final[f.id]["prediction"], near[f.id])
            row[f"{prefix}neighbours"] = "; ".join(f"{n.subject} → {n.object} ({o:.2f})"
                                                   for n, o in near[f.id])
        result = _leak_summary(held, flips, final, near, [r[f"{prefix}leak"] for r in rows],
                               shuffles, seed)
        if name == "tokens":
            summary.update(result)
            # per fact: forgotten (1/0) vs the number of overlapping new facts of its relation
            n_overlapping = [float(sum(n.relation == f.relation and token_overlap(f, n) > 0
                                       for n in new_facts)) for f in right]
            summary["forgetting_overlap_correlation"] = _correlation(n_overlapping, flipped)
            summary["flip_rate_without_overlap"] = _rate(
                [y for x, y in zip(n_overlapping, flipped) if x == 0])
            summary["flip_rate_with_overlap"] = _rate(
                [y for x, y in zip(n_overlapping, flipped) if x > 0])
        else:
            # per fact: forgotten (1/0) vs its highest similarity to a new fact of its relation
            nearest = [max((score(f, n) for n in new_facts if n.relation == f.relation),
                           default=0.0) for f in right]
            summary[name] = {**result, "forgetting_similarity_correlation":
                             _correlation(nearest, flipped)}
    return rows, summary


def _leak_summary(held: list[Fact], flips: list[Fact], final: dict[str, dict],
                  near: dict[str, list[tuple[Fact, float]]], leaked: list[bool],
                  shuffles: int, seed: int) -> dict:
    """Leak share of the flips, its shuffled-pairing baseline and the neighbours' mean score."""
    rng = random.Random(seed)
    by_relation: dict[str, list[Fact]] = {}
    for f in held:
        by_relation.setdefault(f.relation, []).append(f)
    baseline = []
    for _ in range(shuffles if flips else 0):
        hits = [leaks(final[f.id]["prediction"], near[rng.choice(by_relation[f.relation]).id])
                for f in flips]
        baseline.append(sum(hits) / len(hits))
    scores = [statistics.mean(o for _, o in near[f.id]) if near[f.id] else 0.0 for f in flips]
    return {"leak_share": sum(leaked) / len(leaked) if leaked else None,
            "shuffled_leak_share": statistics.mean(baseline) if baseline else None,
            "mean_neighbour_overlap_of_flips": statistics.mean(scores) if scores else None}


def _correlation(xs: list[float], ys: list[float]) -> float | None:
    """Pearson r (point-biserial for a 0/1 ``ys``); ``None`` when either side is constant."""
    if len(xs) < 2 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    return statistics.correlation(xs, ys)


def _rate(values: list[float]) -> float | None:
    return statistics.mean(values) if values else None


def _predictions(run: Path, epoch: int) -> list[dict]:
    path = run / "predictions" / f"epoch_{epoch}.jsonl"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; is {run} a finished fit's run folder?")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def analyze_run(run: str | Path, top_k: int = 3, shuffles: int = 100, seed: int = 0,
                hidden_layer: int | None = -1) -> dict:
    """Attribute the flips of a finished run; writes ``<run>/analysis/attribution.{csv,json}``.

    With ``hidden_layer`` set, neighbours by hidden-state similarity come from the run's base
    model (``model.model`` of its config) at that layer.
    """
    from halluc_cl.data.sources import load_source

    run = Path(run)
    summary_path = run / "summary.json"
    if not summary_path.is_file():
        raise ConfigError(f"{run} holds no summary.json; pass the folder of a finished fit")
    summary = json.loads(summary_path.read_text())
    config = yaml.safe_load((run / "config.yaml").read_text())
    facts = {f.id: f for f in load_source(config["data"]["source"])}
    reference_epoch = summary["warmup_epochs"] - 1
    reference = {p["id"]: p["correct"] for p in _predictions(run, reference_epoch)
                 if p["split"] == "heldout_test"}
    last = _predictions(run, summary["history"][-1]["epoch"])
    final = {p["id"]: p for p in last if p["split"] == "heldout_test"}
    held = [facts[i] for i in final]
    new_facts = [facts[p["id"]] for p in last if p["split"] == "unknown_train"]
    hidden = None
    if hidden_layer is not None:
        hidden = _base_model_states(config, held + new_facts, hidden_layer)
    rows, result = attribute(held, new_facts, reference, final, top_k, shuffles, seed, hidden)
    buf = io.StringIO()
    fields = ["id", "question", "answer", "prediction", "leak", "neighbours"]
    if hidden is not None:
        fields += ["hidden_leak", "hidden_neighbours"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(run / "analysis" / "attribution.csv", buf.getvalue())
    atomic_write_text(run / "analysis" / "attribution.json", json.dumps(result, indent=2) + "\n")
    return result


def _base_model_states(config: dict, facts: list[Fact], layer: int) -> dict[str, torch.Tensor]:
    from halluc_cl.analysis.similarity import fact_states
    from halluc_cl.facts.prompts import PromptFormat
    from halluc_cl.lm.loading import load_causal_lm, load_tokenizer
    from halluc_cl.synthetic.resolve import resolve

    spec = resolve(config["model"]["model"])
    prompt = config["data"].get("prompt")
    fmt = PromptFormat(**(prompt.get("init_args", prompt) if isinstance(prompt, dict) else {}))
    model = load_causal_lm(spec, config["model"].get("dtype", "float32"))
    return fact_states(model, load_tokenizer(spec), facts, layer, fmt)
