"""halluc-cl as a library: every command of ``halluc-cl`` as a plain typed function.

    from halluc_cl import api

    summary = api.fit("--config", "distill", "--trainer.max_epochs", "5")
    print(summary["final"]["heldout_test_acc"])
    results = api.compare(methods={"sft": ["sft"], "distill": ["distill"]}, seeds=[0, 1])

The functions return their results and raise ``HallucError`` subclasses for user errors and
``Interrupted`` for SIGINT / SIGTERM; they never print an error line or exit the interpreter
(that is ``halluc_cl.cli``'s job, which calls them).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from halluc_cl.analysis.attribution import analyze_run
from halluc_cl.analysis.rescore import rescore
from halluc_cl.analysis.studies import mechanism_study
from halluc_cl.experiments.compare import compare
from halluc_cl.experiments.evaluate import evaluate
from halluc_cl.experiments.fit import resolved_config, run_verb
from halluc_cl.probing.slick import probe
from halluc_cl.synthetic.base_model import build_base_model
from halluc_cl.train.run_files import run_dir

__all__ = ["attribution", "compare", "evaluate", "fit", "mechanism_study", "pretrain", "probe",
           "rescore", "resolved_config", "test", "validate"]


def fit(*args: str) -> dict:
    """Warm up, then fine-tune with the methods, evaluating every epoch (``halluc-cl fit``).

    Args:
        *args: The command line after ``fit``, e.g. ``"--config", "distill"``.

    Returns:
        The run's summary (its ``summary.json``: final and peak metrics, decline, cost,
        the run folder's files).
    """
    cli = run_verb(["fit", *args])
    return json.loads((run_dir(cli.trainer) / "summary.json").read_text(encoding="utf-8"))


def _metrics(verb: str, args: tuple[str, ...]) -> dict[str, float]:
    cli = run_verb([verb, *args])
    return {name: float(value) for name, value in cli.trainer.callback_metrics.items()
            if not math.isnan(float(value))}


def validate(*args: str) -> dict[str, float]:
    """Evaluate a model or checkpoint (``--ckpt_path``) on every split (``halluc-cl
    validate``); the logged metrics."""
    return _metrics("validate", args)


def test(*args: str) -> dict[str, float]:
    """Evaluate a model or checkpoint once (``halluc-cl test``); the logged ``test/``
    metrics."""
    return _metrics("test", args)


test.__test__ = False  # not a pytest test, whatever imports it


def pretrain(world: str = "default", force: bool = False) -> Path:
    """Build (or rebuild with ``force``) the synthetic base model of a world and cache it.

    Args:
        world: Synthetic world preset.
        force: Rebuild even when a cached build exists.

    Returns:
        The built model's folder.
    """
    return build_base_model(world, force=force)


def attribution(run: str, top_k: int = 3, shuffles: int = 100, seed: int = 0,
                hidden_layer: int | None = -1) -> dict:
    """Attribute a finished fit's hallucinations to the new facts they resemble.

    Args:
        run: The fit's run folder (``summary.json``, ``config.yaml``, ``predictions/``).
        top_k: Neighbours (new training facts of the same relation) per flipped fact.
        shuffles: Random re-pairings of the shuffled baseline.
        seed: Seed of the re-pairings.
        hidden_layer: Layer of the base model's hidden states for the similarity neighbours
            (``null``: name-token neighbours only).

    Returns:
        The attribution (also written to ``<run>/analysis/``).
    """
    return analyze_run(run, top_k, shuffles, seed, hidden_layer)
