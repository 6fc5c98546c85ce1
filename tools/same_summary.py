"""Whether two runs' ``summary.json`` agree (a one-process and a several-process fit).

    python tools/same_summary.py RUN_A RUN_B

Ignores the wall time, the process count and the config hash; the drift and the losses are
compared to 1e-6 (the gradient all-reduce rounds differently from one process's sum). Prints
``same`` or each differing key, and exits 1 on a difference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def differences(a, b, key: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in differences(a.get(k), b.get(k), f"{key}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{key}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and key.endswith("heldout_drift"):
        return [] if abs(a - b) <= 1e-6 else [f"{key}: {a} != {b}"]
    return [] if a == b else [f"{key}: {a} != {b}"]


def load(run: str) -> dict:
    out = json.loads((Path(run) / "summary.json").read_text())
    out.pop("wall_time_s", None)
    for key in ("processes", "config_hash"):
        out.get("protocol", {}).pop(key, None)
    return out


if __name__ == "__main__":
    diff = differences(load(sys.argv[1]), load(sys.argv[2]))
    print("\n".join(diff) if diff else "same")
    sys.exit(1 if diff else 0)
