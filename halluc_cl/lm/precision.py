"""Whether bf16 autocast pays on this CPU.

bf16 autocast (``trainer.precision: bf16-mixed``) is faster than fp32 on GPUs and on CPUs
with bf16 instructions (AVX512-BF16, AMX; Arm's BF16), and much slower on CPUs without them,
where PyTorch emulates it: a SmolLM2-135M SFT step took 80 s against 4.1 s in fp32 on an
AVX2-only AMD EPYC (docs/performance.md). The check reads the CPU's flags; PyTorch's own
test of them is private.
"""

from __future__ import annotations

from pathlib import Path

BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 flags, Arm "Features"


def cpu_has_bf16(cpuinfo: str | None = None) -> bool | None:
    """Whether the CPU has bf16 instructions, from ``/proc/cpuinfo`` (or the text given);
    ``None`` where that cannot be told (no such file)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        if not path.is_file():
            return None
        cpuinfo = path.read_text(errors="replace")
    flags = {flag for line in cpuinfo.splitlines()
             if line.split(":")[0].strip().lower() in ("flags", "features")
             for flag in line.partition(":")[2].split()}
    return any(flag in flags for flag in BF16_FLAGS)


def slow_bf16_warning(precision: str, device_type: str, cpuinfo: str | None = None) -> str | None:
    """The warning for a bf16 precision on a CPU that emulates bf16, else ``None``.

    Args:
        precision: The trainer's precision (``bf16-mixed``, ``32-true``, …).
        device_type: The device the fit runs on (``cpu``, ``cuda``, …).
        cpuinfo: The text of ``/proc/cpuinfo`` (read when ``None``).
    """
    if device_type != "cpu" or not str(precision).startswith("bf16"):
        return None
    if cpu_has_bf16(cpuinfo) is not False:
        return None
    return (f"trainer.precision={precision} on a CPU without bf16 instructions (no "
            "AVX512-BF16 or AMX): bf16 is emulated here and a step takes many times as long as "
            "in fp32 (20x for SmolLM2-135M, docs/performance.md); pass "
            "--trainer.precision 32-true unless the run must match bf16 results")
