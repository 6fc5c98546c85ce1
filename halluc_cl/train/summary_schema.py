"""The JSON Schema of ``summary.json`` (``run_files.build_summary``), documented in
docs/metrics.md.

    from halluc_cl.train.summary_schema import summary_errors
    problems = summary_errors(json.loads(Path("runs/sft/version_0/summary.json").read_text()))

A field added, removed or retyped in ``build_summary`` must change ``SUMMARY_SCHEMA`` and
``run_files.SCHEMA_VERSION`` together: the test suite validates every ``summary.json`` it
writes against this schema (``tests/conftest.py``). Checking needs the ``jsonschema``
package (the ``dev`` extra).
"""

from __future__ import annotations

from halluc_cl.metrics.split_metrics import HELDOUT, SPLITS
from halluc_cl.train.run_files import SCHEMA_VERSION, SNAPSHOT_MEASURES, SUMMARY_KEYS

_RATE = {"type": "number", "minimum": 0, "maximum": 1}
_DRIFT = {"type": "number", "minimum": -1e-6, "maximum": 2}  # a cosine distance, float error
_COUNT = {"type": "integer", "minimum": 0}
_DECLINE = {"type": ["number", "null"], "maximum": 1}  # negative when a split recovered
_LOSS = {"type": "number", "minimum": -1, "maximum": 1}  # a share of the split; negative: a gain
_LOSS_REL = {"type": "number", "maximum": 1}  # over the snapshot's accuracy
# the measures from the snapshot (``metrics/snapshot.py``; run_files.SNAPSHOT_MEASURES)
_SNAPSHOT = {"snapshot_loss": _LOSS, "snapshot_loss_rel": _LOSS_REL, "forgotten": _COUNT,
             "forgotten_rate": _RATE, "gained": _COUNT, "gained_rate": _RATE,
             "lasting_loss": _LOSS, "lasting_loss_rel": _LOSS_REL}
assert set(_SNAPSHOT) == set(SNAPSHOT_MEASURES)
# one evaluation as the hooks log it (train/evaluation_hooks.py)
_EVAL_KEYS = {
    **{k: _DRIFT if k == "heldout_drift" else _RATE for k in SUMMARY_KEYS},
    "heldout_test_peak": _RATE, "heldout_val_peak": _RATE,
    "heldout_test_decline": {"type": "number", "maximum": 1},
    "heldout_val_decline": {"type": "number", "maximum": 1},
    **{f"{names.stem}_{k}": v for names in SPLITS.values() for k, v in _SNAPSHOT.items()},
}
_EVALUATION = {"type": "object", "required": ["epoch"],
               "properties": {"epoch": _COUNT, **_EVAL_KEYS}, "additionalProperties": False}

_IDS = {"type": "array", "items": {"type": "string"}}


def _snapshot_split(split: str) -> dict:
    ids = {"kept_ids": _IDS, "forgotten_ids": _IDS} if split in HELDOUT else {}
    return {"type": "object", "additionalProperties": False,
            "required": ["acc", "snapshot_loss", *ids],
            "properties": {"acc": _RATE, **_SNAPSHOT, **ids}}


SUMMARY_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "halluc-cl summary.json",
    "type": "object",
    "required": ["schema_version", "final", "peak", "heldout_test_decline",
                 "heldout_val_decline", "snapshot", "cost", "protocol", "warmup_end", "epochs", "history",
                 "warmup_epochs", "model", "methods", "seed", "wall_time_s", "versions",
                 "git_commit"],
    "additionalProperties": False,
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "final": {"type": "object", "additionalProperties": False,
                  "properties": {k: _EVAL_KEYS[k] for k in SUMMARY_KEYS}},
        "peak": {"type": "object", "additionalProperties": False,
                 "properties": {k: _RATE for k in ("heldout_test_acc", "heldout_val_acc",
                                                   "new_fact_acc", "known_train_acc")}},
        "heldout_test_decline": _DECLINE,
        "heldout_val_decline": _DECLINE,
        "snapshot": {"type": "object", "additionalProperties": False, "required": ["window"],
                     "properties": {"window": {"type": "integer", "minimum": 1},
                                    **{s: _snapshot_split(s) for s in SPLITS}}},
        "cost": {"type": "object", "additionalProperties": False,
                 "required": ["student_tokens", "teacher_tokens", "train_token_passes"],
                 "properties": {"student_tokens": _COUNT, "teacher_tokens": _COUNT,
                                "train_token_passes": _COUNT}},
        "protocol": {
            "type": "object", "additionalProperties": False,
            "required": ["seed", "config_hash"],
            "properties": {
                "split_seed": {"type": "integer"},
                "order_seed": {"type": "integer"},
                "heldout_disjoint": {"enum": ["subject", "fact"]},
                "split_sizes": {
                    "type": "object", "additionalProperties": False,
                    "required": ["heldout_val", "heldout_test", "known_train", "unknown_train",
                                 "pool", "heldout_subjects"],
                    "properties": {k: _COUNT for k in (
                        "heldout_val", "heldout_test", "known_train", "unknown_train", "pool",
                        "heldout_subjects")}},
                "seed": {"type": "integer"},
                "processes": {"type": "integer", "minimum": 1},  # absent in earlier summaries
                # null when the fit did not come from the CLI (no resolved config to hash)
                "config_hash": {"type": ["string", "null"], "pattern": "^[0-9a-f]{64}$"},
            },
        },
        "warmup_end": {"oneOf": [_EVALUATION, {"type": "null"}]},
        "epochs": _COUNT,
        "history": {"type": "array", "items": _EVALUATION},
        "warmup_epochs": {"type": "integer", "minimum": 1},
        "model": {"type": "string", "minLength": 1},
        "methods": {"type": "array", "items": {"type": "string"}},
        "seed": {"type": "integer"},  # -1: no seed_everything
        "wall_time_s": {"type": "number", "minimum": 0},
        "versions": {"type": "object", "required": ["halluc-cl", "torch", "lightning",
                                                     "transformers"],
                     "additionalProperties": {"type": "string"}},
        "git_commit": {"type": ["string", "null"], "pattern": "^[0-9a-f]{40}(\\+dirty)?$"},
    },
}


def summary_errors(summary: object) -> list[str]:
    """Every way ``summary`` departs from ``SUMMARY_SCHEMA``, one line each (``[]``: valid).

    >>> summary_errors({"schema_version": 1})[0]
    "$: 'cost' is a required property"
    """
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(SUMMARY_SCHEMA)
    return [f"{error.json_path}: {error.message}" for error in
            sorted(validator.iter_errors(summary), key=lambda e: (e.json_path, e.message))]
