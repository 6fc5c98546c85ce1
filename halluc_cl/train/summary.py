"""What a fit prints first: the model's parameter counts, without Lightning's noise.

Lightning's default summary lists every submodule with a ``FLOPs`` column and a ``Total
FLOPs`` line, which read ``0`` until a forward pass has been measured (never, for a fit), and
the module's torchmetrics collections as rows of zero parameters. ``ParameterSummary`` is
Lightning's ``ModelSummary`` with its public ``summarize`` hook replaced: the same counts, the
rows that hold parameters, no FLOPs. ``LightningTip`` drops the advertisement Lightning logs
for its hosted logger whenever a Trainer is built without it.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.callbacks import ModelSummary, RichModelSummary
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_summary import get_human_readable_count

_DROPPED_COLUMNS = ("FLOPs",)


class ParameterSummary(ModelSummary):
    """``ModelSummary`` without FLOPs and without parameter-free rows (metrics).

    Args:
        max_depth: Depth of submodule nesting listed (0: totals only).
    """

    def __init__(self, max_depth: int = 1) -> None:
        super().__init__(max_depth=max_depth)

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int,
                  trainable_parameters: int, model_size: float,
                  total_training_modes: dict[str, int], total_flops: int,
                  **summarize_kwargs: Any) -> None:
        rank_zero_info(summary_table(summary_data, total_parameters, trainable_parameters,
                                     model_size))


def summary_table(summary_data: list[tuple[str, list[str]]], total_parameters: int,
                  trainable_parameters: int, model_size: float) -> str:
    """The summary as text: one row per submodule with parameters, then the totals.

    Example:
        >>> print(summary_table([("Name", ["metrics", "student"]), ("Params", ["0", "123 K"]),
        ...                      ("FLOPs", ["0", "0"])], 123_000, 123_000, 0.49))
        Name    | Params
        student | 123 K
        Trainable params: 123 K
        Non-trainable params: 0
        Total params: 123 K
        Total estimated model params size (MB): 0.49
    """
    columns = [(name, values) for name, values in summary_data
               if name.strip() and name not in _DROPPED_COLUMNS]  # " " holds row numbers
    params = dict(summary_data).get("Params", [])
    keep = [i for i, count in enumerate(params) if count.strip() != "0"]
    lines = []
    if columns and keep:
        cells = [[name] + [values[i] for i in keep] for name, values in columns]
        widths = [max(len(c) for c in column) for column in cells]
        for row in zip(*cells):
            lines.append(" | ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    counts = {"Trainable params": trainable_parameters,
              "Non-trainable params": total_parameters - trainable_parameters,
              "Total params": total_parameters}
    lines += [f"{name}: {get_human_readable_count(n).strip()}" for name, n in counts.items()]
    lines.append(f"Total estimated model params size (MB): {model_size:.2f}")
    return "\n".join(lines)


def use_parameter_summary(callbacks: list) -> None:
    """Replaces Lightning's default summary (``ModelSummary`` or ``RichModelSummary`` exactly)
    in ``callbacks`` with ``ParameterSummary``; a subclass a user configured stays."""
    for i, callback in enumerate(callbacks):
        if type(callback) in (ModelSummary, RichModelSummary):
            callbacks[i] = ParameterSummary()


class LightningTip(logging.Filter):
    """Drops Lightning's "💡 Tip: ..." advertisements (logged through ``rank_zero_info``,
    whose logger also carries messages worth keeping, so the logger stays on)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip:")


def hide_lightning_tips() -> None:
    """Adds ``LightningTip`` to the logger of ``rank_zero_info`` (once)."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, LightningTip) for f in logger.filters):
        logger.addFilter(LightningTip())
