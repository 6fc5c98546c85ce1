"""The held-out metrics of a model, without training: ``halluc-cl evaluate``.

    halluc-cl evaluate --run runs/sft/version_0                 # its model/ on its own splits
    halluc-cl evaluate --model synthetic://default --run runs/sft/version_0   # the base model
    halluc-cl evaluate --model smollm2-135m-instruct --data runs/probe/geo.jsonl --out geo.json

The model (a saved folder such as a run's ``model/``, a GGUF file or alias, a hub id, or
``synthetic://<world>``) answers every fact greedily. The answers are scored by the code
that scores a fit's validation: ``FactSFTModule``'s evaluation hooks under
``Trainer.validate``, on the batches ``FactDataModule`` makes (prompt, alias and abstention
candidates, ``model.eval_method``). Which facts:

- ``run`` (the default with ``--run``, a fit's run folder or its ``config.yaml``): the run's
  splits ``heldout_test``, ``heldout_val``, ``unknown_train`` and ``known_train``, drawn
  from its data settings (source, split seed, sizes, categories, disjointness) with its
  prompt and evaluation settings. The run's ``model/`` then gives its final metrics
  (``summary.json`` ``final``) exactly.
- ``all`` (the default without ``--run``): every fact of ``--data``, as one set ``all``.

Per set it reports accuracy (exact match), ``abstained`` (the share answered with an
abstention phrase) and both per knowledge category where the facts have one. The
hallucination rate needs the fit's warm-up answers as its reference and is not reported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import lightning as L
import yaml
from jsonargparse import ArgumentError, ArgumentParser

from halluc_cl.data.datamodule import FactDataModule
from halluc_cl.data.eval_splits import EVAL_SPLITS, EvalSplits
from halluc_cl.data.sources import load_source
from halluc_cl.errors import ConfigError
from halluc_cl.facts.prompts import PromptFormat
from halluc_cl.facts.schema import CATEGORIES, Fact
from halluc_cl.io import atomic_write_text, read_text
from halluc_cl.lm.loading import load_tokenizer
from halluc_cl.synthetic.resolve import resolve
from halluc_cl.train.evaluation import EvalMethod
from halluc_cl.train.evaluation_hooks import SPLIT_METRIC

FactChoice = Literal["run", "all"]
ALL = "all"
CARRIER = "heldout_test"  # the split name ``all`` is scored under: no training reference needed
# what a fit's validation logs of a split, under the names of summary.json's ``final``
RUN_METRICS = (*SPLIT_METRIC.values(), "new_fact_abstain_rate")


class FactSetData(FactDataModule):
    """Every given fact as one evaluation set, in ``FactDataModule``'s evaluation batches; no
    split is drawn and nothing is trained on.

    Args:
        facts: The facts to evaluate.
        tokenizer: Model spec whose tokenizer is used.
        prompt: Prompt format (default: ``PromptFormat()``).
        eval_batch_size: Evaluation batch size.
        unknown_answer: An extra abstention phrase (a run's "I don't know" answer).
    """

    def __init__(self, facts: list[Fact], tokenizer: str, prompt: PromptFormat | None = None,
                 eval_batch_size: int = 256, unknown_answer: str | None = None) -> None:
        # FactDataModule.__init__ takes the fit's split settings; only evaluation state here
        L.LightningDataModule.__init__(self)
        if eval_batch_size < 1:
            raise ConfigError(f"eval_batch_size must be >= 1, got {eval_batch_size}")
        self.splits = {**{s: [] for s in EVAL_SPLITS}, CARRIER: list(facts)}
        self.prompt = prompt or PromptFormat()
        self.tokenizer_spec, self.tokenizer = tokenizer, None  # ``load``, from ``setup``
        self.eval_batch_size, self.eval_max_facts = eval_batch_size, None
        self.unknown_answer = unknown_answer
        self.split_seed = self.order_seed = 0
        self.batch_size, self.warmup_epochs, self.extra_per_batch = eval_batch_size, 0, 0
        self.replay_fraction = 0.0  # nothing to train on
        self.rank, self.world = 0, 1
        self.extra_source, self.extra_select, self.answer_shuffle = "questions", "random", "none"
        self.extra_inputs = None
        self.evaluation: EvalSplits | None = None  # ``load``

    def prepare_data(self) -> None:
        resolve(self.tokenizer_spec)

    def load(self) -> None:
        """Load the tokenizer (the facts are given); once."""
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(resolve(self.tokenizer_spec))
            self.evaluation = EvalSplits(self.splits, self.tokenizer,
                                         self.prompt.bind(self.tokenizer),
                                         self.eval_batch_size, None, self.unknown_answer)


def run_config(run: str) -> tuple[Path, dict]:
    """The ``config.yaml`` of a fit (its run folder, or the file itself) and its contents."""
    path = Path(run)
    path = path / "config.yaml" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"{path} does not exist: --run takes a fit's run folder or its "
                          "config.yaml")
    try:
        cfg = yaml.safe_load(read_text(path))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("data"), dict):
        raise ConfigError(f"{path} is not a fit's config (no data section)")
    return path, cfg


def _run_data(cfg: dict, source: str, model: str, eval_batch_size: int | None
              ) -> FactDataModule:
    """The run's ``FactDataModule``, on ``source`` with ``model``'s tokenizer."""
    data = {**cfg["data"], "source": source, "tokenizer": model}
    warmup = (cfg.get("model") or {}).get("warmup_epochs")
    if warmup is not None:  # linked from model.warmup_epochs in a fit, so not in its data
        data["warmup_epochs"] = warmup
    if eval_batch_size is not None:
        data["eval_batch_size"] = eval_batch_size
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(FactDataModule, "data")
    try:
        parsed = parser.parse_object({"data": data})
    except ArgumentError as exc:  # keys this version does not know, or a bad value
        reason = " ".join(str(exc).split())
        raise ConfigError(f"the run's data settings do not fit FactDataModule: {reason}") from None
    return parser.instantiate_classes(parsed).data


def _prompt(cfg: dict | None) -> PromptFormat | None:
    prompt = (cfg or {}).get("data", {}).get("prompt")
    if not prompt:
        return None
    return PromptFormat(**prompt.get("init_args", prompt))


def _rates(rows: list[dict]) -> dict:
    n = len(rows)
    return {"facts": n, "acc": sum(r["correct"] for r in rows) / n if n else None,
            "abstained": sum(r["abstained"] for r in rows) / n if n else None}


def _set_report(rows: list[dict], category: dict[str, str | None]) -> dict:
    out = _rates(rows)
    names = sorted({c for r in rows if (c := category.get(r["id"])) is not None},
                   key=lambda c: (CATEGORIES.index(c) if c in CATEGORIES else len(CATEGORIES), c))
    if names:
        out["categories"] = {c: _rates([r for r in rows if category.get(r["id"]) == c])
                             for c in names}
    return out


def format_report(result: dict) -> str:
    """The printed table: one row per fact set (and per category where a set has several)."""
    what = f"the splits of run {result['run']}" if result["facts"] == "run" else "every fact"
    lines = [f"model: {result['model']}", f"facts: {result['data']}, {what}",
             f"{'set':<24}{'facts':>7}{'acc':>8}{'abstained':>11}"]

    def row(label: str, r: dict) -> str:
        acc = "-" if r["acc"] is None else f"{r['acc']:.3f}"
        abst = "-" if r["abstained"] is None else f"{r['abstained']:.3f}"
        return f"{label:<24}{r['facts']:>7}{acc:>8}{abst:>11}"

    for name, report in result["sets"].items():
        lines.append(row(name, report))
        categories = report.get("categories", {})
        if len(categories) > 1:
            lines += [row(f"  {c}", r) for c, r in categories.items()]
    return "\n".join(lines)


def _check_out(out: str) -> Path:
    """``out`` as a path, refused before any work when it cannot be written."""
    path = Path(out)
    if path.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a JSON file path")
    parent = next((p for p in path.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write --out {out}: {parent} is not a writable folder")
    return path


def _write(path: Path, result: dict) -> None:
    try:
        atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    except OSError as exc:
        raise ConfigError(f"cannot write --out {path}: {exc.strerror or exc}") from None


def _model_and_data(model: str | None, data: str | None, facts: str, config_path: Path | None,
                    cfg: dict | None) -> tuple[str, str]:
    """The model and the facts to evaluate: as given, else the run's."""
    if facts not in ("run", ALL):
        raise ConfigError(f"facts must be run or all, got {facts!r}")
    if facts == "run" and cfg is None:
        raise ConfigError("--facts run needs --run (a fit's run folder or its config.yaml)")
    if model is None:
        if config_path is None or not (config_path.parent / "model").is_dir():
            raise ConfigError("evaluate needs --model (or --run with a run folder holding model/)")
        model = str(config_path.parent / "model")
    if data is None:
        if cfg is None:
            raise ConfigError("evaluate needs --data (a fact file or source) or --run")
        data = cfg["data"].get("source") or "synthetic://default"
    return model, data


def _validated(model: str, datamodule, settings: dict, accelerator: str):
    """``(module, trainer)`` after one validation pass of ``model`` over ``datamodule``."""
    from halluc_cl.train.module import FactSFTModule

    module = FactSFTModule(model, eval_method=settings["eval_method"],
                           max_new_tokens=settings["max_new_tokens"], dtype=settings["dtype"])
    module.want_prediction_text = False  # the metrics never need it
    trainer = L.Trainer(accelerator=accelerator, devices=1, precision=settings["precision"],
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    module.connect(datamodule)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    return module, trainer


def evaluate(
    model: str | None = None,
    data: str | None = None,
    run: str | None = None,
    facts: FactChoice | None = None,
    out: str | None = None,
    eval_method: EvalMethod | None = None,
    max_new_tokens: int | None = None,
    dtype: str | None = None,
    eval_batch_size: int | None = None,
    precision: str | None = None,
    accelerator: str = "auto",
) -> dict:
    """Evaluate a model on facts without training: accuracy and abstention per fact set.

    Args:
        model: A model folder (such as a run's ``model/``), a GGUF file or alias, a hub id,
            or ``synthetic://<world>`` (``None``: the ``model/`` folder of ``run``).
        data: The facts: a JSONL file, a folder with ``facts.jsonl``, an EntityQuestions
            folder, ``geonames://...``, an ``hf:`` table or ``synthetic://<world>``
            (``None``: the run's ``data.source``).
        run: A fit's run folder or its ``config.yaml``: its data settings (the split), prompt
            and evaluation settings.
        facts: ``run``: the run's splits (the default with ``run``); ``all``: every fact of
            ``data`` (the default without).
        out: Also write the result as JSON here.
        eval_method: ``forward`` or ``generate`` (``None``: the run's, else ``forward``).
        max_new_tokens: Answer length limit (``None``: the run's, else 8).
        dtype: Weight dtype, ``float32`` or ``bfloat16`` (``None``: the run's, else
            ``float32``).
        eval_batch_size: Facts per batch (``None``: the run's, else 256).
        precision: Lightning precision (``None``: the run's ``trainer.precision``, else
            ``32-true``).
        accelerator: Lightning accelerator (one device is used).

    Returns:
        ``model``, ``data``, ``run``, ``facts``, ``settings``, ``sets`` (per set: ``facts``,
        ``acc``, ``abstained``, ``categories``) and ``metrics`` (with ``facts=run``: what a
        fit's validation logs, named as in ``summary.json``'s ``final``).
    """
    config_path, cfg = run_config(run) if run is not None else (None, None)
    facts = facts or ("run" if cfg is not None else ALL)
    model, data = _model_and_data(model, data, facts, config_path, cfg)
    out_path = _check_out(out) if out is not None else None
    run_model = (cfg or {}).get("model") or {}
    settings = {"eval_method": eval_method or run_model.get("eval_method") or "forward",
                "max_new_tokens": max_new_tokens or run_model.get("max_new_tokens") or 8,
                "dtype": dtype or run_model.get("dtype") or "float32",
                "precision": str(precision or ((cfg or {}).get("trainer") or {}).get("precision")
                                 or "32-true")}
    if facts == "run":
        datamodule = _run_data(cfg, data, model, eval_batch_size)
    else:
        run_data = (cfg or {}).get("data") or {}
        datamodule = FactSetData(load_source(data), model, _prompt(cfg),
                                 eval_batch_size or run_data.get("eval_batch_size") or 256,
                                 run_data.get("unknown_answer"))
    module, trainer = _validated(model, datamodule, settings, accelerator)
    category = {f.id: f.category for split in datamodule.splits.values() for f in split}
    names = datamodule.eval_split_names()
    sets = {(ALL if facts == ALL else split): _set_report(
        [p for p in module.last_predictions if p["split"] == split], category) for split in names}
    logged = trainer.callback_metrics
    metrics = {k: float(logged[k]) for k in RUN_METRICS if k in logged} if facts == "run" else {}
    result = {"model": model, "data": data, "run": str(config_path) if config_path else None,
              "facts": facts, "settings": settings, "sets": sets, "metrics": metrics}
    print(format_report(result))
    if out_path is not None:
        _write(out_path, result)
        print(f"wrote {out_path}")
    return result
