"""SliCK knowledge categories (Gekhman et al. 2024) of a model on a set of facts.

    halluc-cl probe --config configs/real/smollm2_probe.yaml   # SmolLM2 on GeoNames facts
    halluc-cl fit --config configs/real/smollm2_study.yaml     # splits from the probed categories

For each fact, ``n_prompts`` ``k_shot``-shot prompts (exemplars of the same relation
from the exemplar pool, never the probed fact or its subject) each get one greedy answer and
``n_samples`` answers sampled at temperature τ with top-k. With ``P0`` the share of correct
greedy answers and ``Ps`` that of correct samples:

- HighlyKnown: ``P0 = 1``;  MaybeKnown: ``0 < P0 < 1``;
- WeaklyKnown: ``P0 = 0`` and ``Ps > 0``;  Unknown: ``P0 = 0`` and ``Ps = 0``.

Facts are written back with ``category`` and ``p_correct`` (= P0). Finished facts are appended
to ``<out>.partial.jsonl`` as they come, so an interrupted probe (Ctrl-C, SIGTERM, even a kill:
a torn last line is dropped) resumes where it stopped; ``<out>`` itself is written atomically
at the end.
"""

from __future__ import annotations

import glob
import json
import random
import time
import zlib
from collections import Counter
from pathlib import Path

import torch
from tqdm.auto import tqdm

from halluc_cl.distributed import barrier, gather_lists, init_from_environment, rank_and_world
from halluc_cl.errors import ConfigError, DataError
from halluc_cl.facts.matching import exact_match
from halluc_cl.facts.prompts import DEFAULT_TEMPLATE, PromptFormat, encode_prompts
from halluc_cl.facts.schema import Fact, append_facts, fact_from_dict, write_facts
from halluc_cl.io import atomic_write_text
from halluc_cl.probing.sampling import PrefixCache, greedy_and_sampled
from halluc_cl.runtime.signals import Interrupted


def categorize(greedy_correct: list[bool], sampled_correct: list[bool]) -> str:
    """SliCK category from the correctness of greedy and sampled answers."""
    if not greedy_correct:
        raise ValueError("categorize needs at least one greedy answer")
    p0 = sum(greedy_correct) / len(greedy_correct)
    if p0 == 1.0:
        return "HighlyKnown"
    if p0 > 0.0:
        return "MaybeKnown"
    return "WeaklyKnown" if any(sampled_correct) else "Unknown"


def choose_exemplars(fact: Fact, pool: dict[str, list[Fact]], k: int,
                     rng: random.Random) -> list[Fact]:
    """``k`` exemplars of ``fact``'s relation, never the fact itself or its subject."""
    candidates = [e for e in pool.get(fact.relation, [])
                  if e.id != fact.id and e.subject != fact.subject]
    if len(candidates) < k:
        raise ConfigError(f"relation {fact.relation!r} has {len(candidates)} usable few-shot "
                          f"exemplars, k_shot={k} needs {k}")
    return rng.sample(candidates, k)


def _shots(fact: Fact, pool: dict[str, list[Fact]], k: int, seed: int, j: int,
           shared: bool) -> list[Fact]:
    """Exemplars of prompt ``j``: shared by the relation's facts, else drawn per fact.

    A shared draw that holds the fact or its subject is replaced by the fact's own draw.
    """
    if shared:
        everyone = pool.get(fact.relation, [])
        if len(everyone) >= k:
            shots = random.Random(f"{seed}:{fact.relation}:{j}").sample(everyone, k)
            if all(e.id != fact.id and e.subject != fact.subject for e in shots):
                return shots
    return choose_exemplars(fact, pool, k, random.Random(f"{seed}:{fact.id}:{j}"))


def fact_prompt_parts(fact: Fact, pool: dict[str, list[Fact]], n_prompts: int, k: int,
                      seed: int, fmt: PromptFormat,
                      shared: bool = False) -> list[tuple[str, str]]:
    """The ``n_prompts`` few-shot prompts of one fact as ``(exemplars, question)`` texts.

    Args:
        fact: The probed fact.
        pool: Exemplars by relation.
        n_prompts: Prompts per fact.
        k: Exemplars per prompt.
        seed: Seed of the draws (with the fact id or relation: resume-stable).
        fmt: Prompt format.
        shared: Prompt ``j`` of every fact of a relation has the same exemplars (so a probe
            encodes them once); else each fact draws its own, as Gekhman et al. 2024 do.
    """
    parts = []
    for j in range(n_prompts):
        shots = _shots(fact, pool, k, seed, j, shared)
        parts.append(fmt.parts([(e.question, e.object) for e in shots], fact.question))
    return parts


def fact_prompts(fact: Fact, pool: dict[str, list[Fact]], n_prompts: int, k: int, seed: int,
                 fmt: PromptFormat, shared: bool = False) -> list[str]:
    """The ``n_prompts`` few-shot prompts of one fact (``fact_prompt_parts`` joined)."""
    return [a + b for a, b in fact_prompt_parts(fact, pool, n_prompts, k, seed, fmt, shared)]


def read_partial(path: Path) -> dict[str, Fact]:
    """Facts already probed. A line that is not a fact is ignored (probed again): the torn
    last line of a killed run, which may end inside a multi-byte UTF-8 character."""
    done: dict[str, Fact] = {}
    if not path.is_file():
        return done
    for i, line in enumerate(path.read_bytes().split(b"\n"), 1):
        try:
            fact = fact_from_dict(json.loads(line.decode("utf-8-sig")), f"{path}:{i}")
        except (UnicodeDecodeError, json.JSONDecodeError, DataError):
            continue
        done[fact.id] = fact
    return done


class SliCKProbe:
    """Probes facts with a model and assigns SliCK categories.

    Args:
        model: The causal LM.
        tokenizer: Its tokenizer.
        exemplars: Few-shot exemplar pool (facts of the same relations, e.g. a dev split).
        n_prompts: Few-shot prompts per fact.
        k_shot: Exemplars per prompt.
        n_samples: Sampled answers per prompt.
        temperature: Sampling temperature.
        top_k: Top-k of the sampling.
        max_new_tokens: Answer length limit.
        batch_prompts: Prompts encoded per forward (each expands to ``1 + n_samples`` rows).
        seed: Seed of exemplar choice and sampling.
        prompt: Prompt format of the questions.
        shared_exemplars: Prompt ``j`` of every fact of a relation has the same exemplars,
            encoded once (``fact_prompt_parts``); False draws them per fact.
    """

    def __init__(self, model, tokenizer, exemplars: list[Fact], n_prompts: int = 10,
                 k_shot: int = 4, n_samples: int = 16, temperature: float = 0.5,
                 top_k: int = 40, max_new_tokens: int = 16, batch_prompts: int = 16,
                 seed: int = 0, prompt: PromptFormat | None = None,
                 shared_exemplars: bool = True) -> None:
        if n_prompts < 1 or k_shot < 0 or n_samples < 0 or batch_prompts < 1:
            raise ConfigError("n_prompts and batch_prompts must be >= 1, k_shot and n_samples "
                              ">= 0")
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.model, self.tokenizer = model, tokenizer
        self.pool: dict[str, list[Fact]] = {}
        for e in exemplars:
            self.pool.setdefault(e.relation, []).append(e)
        self.n_prompts, self.k_shot, self.n_samples = n_prompts, k_shot, n_samples
        self.temperature, self.top_k, self.max_new_tokens = temperature, top_k, max_new_tokens
        self.batch_prompts, self.seed = batch_prompts, seed
        self.fmt = (prompt or PromptFormat()).bind(tokenizer)
        self.shared = shared_exemplars
        self.prefixes = PrefixCache(model)
        self._prefix_ids: dict[str, list[int]] = {}

    def _encode(self, prefix: str, question: str) -> tuple[tuple[int, ...], list[int]]:
        """The tokens of ``prefix + question``, cut into ``(shared head, rest)``.

        The head is the prefix's tokens but its last one (the blank line may merge with what
        follows), and only where the whole prompt starts with them; else it is ``()``.
        """
        if prefix not in self._prefix_ids:
            self._prefix_ids[prefix] = encode_prompts(self.tokenizer, [prefix])[0][:-1]
        head = self._prefix_ids[prefix]
        whole = encode_prompts(self.tokenizer, [prefix + question])[0]
        return ((tuple(head), whole[len(head):]) if whole[:len(head)] == head else ((), whole))

    def probe_batch(self, facts: list[Fact]) -> list[Fact]:
        """The facts with ``category`` and ``p_correct`` set.

        Prompts with the same exemplars run together, their prefix encoded once.
        """
        encoded = [self._encode(*part) for f in facts
                   for part in fact_prompt_parts(f, self.pool, self.n_prompts, self.k_shot,
                                                 self.seed, self.fmt, self.shared)]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (head, _) in enumerate(encoded):
            groups.setdefault(head, []).append(i)
        # seeded per batch by its first fact, so a resumed probe samples the same answers
        generator = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}:{facts[0].id}".encode()))
        answers: list[list[str]] = [[] for _ in encoded]
        for head, members in groups.items():
            for start in range(0, len(members), self.batch_prompts):
                chunk = members[start:start + self.batch_prompts]
                got = greedy_and_sampled(
                    self.model, self.tokenizer, [encoded[i][1] for i in chunk], self.n_samples,
                    self.temperature, self.top_k, self.max_new_tokens, generator,
                    prefix=list(head), prefixes=self.prefixes)
                for i, a in zip(chunk, got):
                    answers[i] = a
        out = []
        for i, fact in enumerate(facts):
            mine = answers[i * self.n_prompts:(i + 1) * self.n_prompts]
            greedy = [exact_match(a[0], fact.aliases) for a in mine]
            sampled = [exact_match(s, fact.aliases) for a in mine for s in a[1:]]
            out.append(Fact(**{**fact.to_dict(), "category": categorize(greedy, sampled),
                               "p_correct": sum(greedy) / len(greedy)}))
        return out

    def run(self, facts: list[Fact], out: Path, facts_per_batch: int = 8) -> dict | None:
        """Probe ``facts`` into ``out``, resuming the partial files of an interrupted probe;
        returns the stats (``None`` on processes other than the first).

        Under several processes (``torchrun``) the batches of ``facts_per_batch`` facts are
        dealt out whole (process ``r`` takes batches ``r, r + W, …``): each batch is the
        one-process batch, sampled from the same seed, so the categories are those of one
        process. Each process appends to its own ``<out>.partial.rank<r>.jsonl`` (one process:
        ``<out>.partial.jsonl``); a resumed probe reads them all, with any process count.
        """
        out = Path(out)
        rank, world = rank_and_world()
        partial = out.with_name(out.name + (f".partial.rank{rank}.jsonl" if world > 1
                                            else ".partial.jsonl"))
        done: dict[str, Fact] = {}
        for path in sorted(out.parent.glob(glob.escape(out.name) + ".partial*.jsonl")):
            done.update(read_partial(path))
        if partial.is_file() and partial.read_bytes()[-1:] not in (b"", b"\n"):
            write_facts(partial, read_partial(partial).values())  # drop a torn last line
        todo = [f for f in facts if f.id not in done]
        batches = [todo[i:i + facts_per_batch] for i in range(0, len(todo), facts_per_batch)]
        barrier()  # every process has read the partial files before any appends to its own
        partial.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        new: list[Fact] = []
        try:
            with tqdm(total=len(facts), initial=len(facts) - len(todo), desc="probe",
                      unit="fact", disable=rank != 0) as bar:
                for batch in batches[rank::world]:
                    probed = self.probe_batch(batch)
                    append_facts(partial, probed)
                    new += probed
                    bar.update(len(batch) * world)
        except Interrupted as exc:  # SIGINT / SIGTERM: the finished facts are in the partial file
            exc.details.append(f"{len(done) + len(new)} of {len(facts)} facts probed, kept in "
                               f"{partial}")
            raise
        done.update({f.id: f for f in gather_lists(new)})
        if rank != 0:
            return None
        seconds = time.perf_counter() - t0
        probed = [done[f.id] for f in facts]
        write_facts(out, probed)
        for path in out.parent.glob(glob.escape(out.name) + ".partial*.jsonl"):
            path.unlink(missing_ok=True)
        stats = {"facts": len(probed), "probed_now": len(todo), "seconds": round(seconds, 2),
                 "facts_per_s": round(len(todo) / seconds, 3) if todo and seconds else None,
                 "processes": world,
                 "categories": dict(Counter(f.category for f in probed))}
        atomic_write_text(out.with_name(out.name + ".stats.json"),
                          json.dumps(stats, indent=2) + "\n")
        return stats


def probe(
    model: str,
    source: str,
    out: str,
    n_prompts: int = 10,
    k_shot: int = 4,
    n_samples: int = 16,
    temperature: float = 0.5,
    top_k: int = 40,
    max_new_tokens: int = 16,
    batch_prompts: int = 16,
    facts_per_batch: int = 8,
    limit: int | None = None,
    seed: int = 0,
    dtype: str = "float32",
    template: str = DEFAULT_TEMPLATE,
    shared_exemplars: bool = True,
    chat: bool = False,
) -> None:
    """Probe what ``model`` knows of ``source``'s facts and write them with SliCK categories.

    Args:
        model: ``synthetic://<world>``, a local folder, a GGUF file / alias, or a hub id.
        source: Facts: ``synthetic://<world>``, JSONL, an EntityQuestions folder,
            ``geonames://...`` or an ``hf:`` table (``data/sources.py``).
        out: Output JSONL (the facts with ``category`` and ``p_correct``); resumable.
        n_prompts: Few-shot prompts per fact.
        k_shot: Exemplars per prompt (same relation, from the exemplar pool).
        n_samples: Sampled answers per prompt.
        temperature: Sampling temperature.
        top_k: Top-k of the sampling.
        max_new_tokens: Answer length limit.
        batch_prompts: Prompts per forward pass (each is repeated ``1 + n_samples`` times).
        facts_per_batch: Facts between two appends to the partial file.
        limit: Probe only the first ``limit`` facts (after the exemplar hold-out).
        seed: Seed of the exemplar hold-out, exemplar choice and sampling.
        dtype: Weight dtype: ``float32`` or ``bfloat16``.
        template: Prompt template with a ``{question}`` field; use the one ``fit`` uses
            (``data.prompt.template``).
        shared_exemplars: Prompt ``j`` of every fact of a relation has the same exemplars, so
            their encoding is computed once; False draws them per fact (slower).
        chat: Render the prompts through the tokenizer's chat template, each exemplar a user
            and an assistant turn (use what ``fit`` uses: ``data.prompt.chat``).
    """
    from halluc_cl.data.sources import exemplar_pool, load_source
    from halluc_cl.lm.loading import load_causal_lm, load_tokenizer
    from halluc_cl.synthetic.resolve import resolve

    facts, exemplars = exemplar_pool(load_source(source), seed=seed)
    facts = facts[:limit] if limit is not None else facts
    created = init_from_environment()  # under torchrun: one share of the batches per process
    try:
        model = resolve(model)
        lm = load_causal_lm(model, dtype)
        if torch.cuda.is_available():
            lm = lm.cuda()
        prober = SliCKProbe(lm, load_tokenizer(model), exemplars, n_prompts, k_shot, n_samples,
                            temperature, top_k, max_new_tokens, batch_prompts, seed,
                            PromptFormat(template=template, chat=chat), shared_exemplars)
        stats = prober.run(facts, Path(out), facts_per_batch)
    finally:
        if created:
            torch.distributed.destroy_process_group()
    if stats is not None:
        print(json.dumps(stats, indent=2))
        print(f"probed facts: {out}")
