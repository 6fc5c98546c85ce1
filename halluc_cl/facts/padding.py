"""Pad token lists into batches: right padding for training, left padding for generation."""

from __future__ import annotations

import random

import torch


def _pad(sequences: list[list[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        span = slice(width - len(s), width) if left else slice(0, len(s))
        ids[i, span] = torch.tensor(s, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def right_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into ``(ids, attention_mask)``."""
    return _pad(sequences, pad_id, left=False)


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ``(ids, attention_mask)``, so prompts end aligned."""
    return _pad(sequences, pad_id, left=True)


def stack_padded(tensors: list[torch.Tensor], value: int) -> torch.Tensor:
    """Right-padded ``[n_i, T_i]`` batches stacked into one ``[Σ n_i, max T_i]`` batch, the
    new columns filled with ``value`` (the pad id, 0 for a mask, the ignore index for labels);
    a single batch is returned as it is (no copy).
    """
    if len(tensors) == 1:
        return tensors[0]
    width = max(t.shape[1] for t in tensors)
    return torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)
                      for t in tensors])


def length_bucketed(rows: list[dict], batch_size: int, window: int,
                    rng: random.Random) -> list[dict]:
    """Rows reordered so that each batch holds rows of similar length (less padding).

    The (already shuffled) rows are cut into windows of ``window`` batches; each window is
    sorted by length (stable, so ties keep the shuffled order) and cut into batches, and the
    batches of the whole epoch are then shuffled. Every row stays in the epoch once; a
    batch's rows come from one window, so the mix of the epoch's data is kept.

    Args:
        rows: Training rows with ``input_ids``.
        batch_size: Rows per batch.
        window: Batches per sorted window (``<= 1``: the rows as given).
        rng: Random source of the batch order.
    """
    if window <= 1:
        return rows
    span = batch_size * window
    batches = []
    for start in range(0, len(rows), span):
        chunk = sorted(rows[start:start + span], key=lambda r: len(r["input_ids"]))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return [r for b in batches for r in b]
