"""Whether two fits gave the same ``summary.json``, key for key: what a refactor must keep.

    python tools/same_summary.py runs/a/version_0/summary.json runs/b/version_0/summary.json

Keys that say when and with what code a run was made are left out (wall time, the package's
and libraries' versions, git commit, schema version), and ``RENAMED`` keys are compared under
their new names; the config hash is compared (renamed settings keep their hash). Prints every difference and exits
with 1 if there is one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

IGNORED = {"wall_time_s", "versions", "git_commit", "schema_version"}
RENAMED = {"regularizers": "methods"}  # summary keys renamed in schema 5


def _flat(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            key = RENAMED.get(key, key)
            if key in IGNORED:
                continue
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): node}


def differences(a: dict, b: dict) -> list[str]:
    """Every dotted key whose value differs (or that only one summary has)."""
    fa, fb = _flat(a), _flat(b)
    missing = "<missing>"
    return [f"{k}: {fa.get(k, missing)!r} != {fb.get(k, missing)!r}"
            for k in sorted(fa.keys() | fb.keys()) if fa.get(k, missing) != fb.get(k, missing)]


def main(paths: list[str]) -> int:
    a, b = (json.loads(Path(p).read_text(encoding="utf-8")) for p in paths)
    diff = differences(a, b)
    print("\n".join(diff) if diff else f"same summary, key for key ({len(_flat(a))} keys)")
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:3]))
