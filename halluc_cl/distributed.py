"""Several processes (DDP, DeepSpeed) giving the numbers of one.

A fit on ``W`` processes splits every batch of the one-process fit by rows (rank ``r`` trains
rows ``r, r + W, …``; ``data/datamodule.py``), so the data, the number of optimizer steps and
the global batch do not depend on ``W``. DDP and DeepSpeed average the ranks' gradients, so a
token mean must be taken over the tokens of *all* ranks (``mean_over_ranks``), not per rank:
each rank divides its sum by ``N_global / W``. Evaluation gathers every fact's outcome
(``gather_lists``) so that every rank computes the metrics of the whole split.

Everything here is a plain ``torch.distributed`` call and a no-op in a single process; each
function is a collective under several processes: every rank must call it, in the same order.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor


def init_from_environment() -> bool:
    """Join the process group a launcher describes (``torchrun``: ``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), for commands that run without Lightning
    (``halluc-cl probe``): NCCL on GPUs (one per local rank), gloo on CPUs.

    Returns:
        Whether this call created the group (then the caller destroys it when done).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available() \
            or dist.is_initialized():
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return True


def close_process_group() -> None:
    """Destroy the default process group, if there is one, while the interpreter is whole.

    Call it when a command has finished on every rank. Lightning registers this at exit only
    for NCCL; a gloo group left to interpreter finalization can abort the process (SIGABRT,
    "terminate called without an active exception": gloo's worker threads still hold work
    with Python references), which a launcher reports as a failed run although every file was
    written.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (``(0, 1)`` without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def mean_over_ranks(values: Tensor) -> Tensor | None:
    """The mean of ``values`` over the rows of every rank, as this rank's share of it.

    With one process it is ``values.mean()``. With ``W`` it is ``values.sum() · W / N``, ``N``
    the number of values on all ranks together: DDP's gradient average of the ranks' shares
    is then the gradient of the global mean, however unevenly the values fall on the ranks.

    Returns:
        ``None`` when no rank has a value (the one-process ``mean()`` of nothing).
    """
    _, world = rank_and_world()
    if world == 1:
        return values.mean() if values.numel() else None
    count = torch.tensor([values.numel()], dtype=torch.float64, device=values.device)
    dist.all_reduce(count)
    if count.item() == 0:
        return None
    return values.sum() * (world / count.item())


def total_over_ranks(counts: dict[str, int]) -> dict[str, int]:
    """Integer counters summed over every rank."""
    _, world = rank_and_world()
    if world == 1:
        return {k: int(v) for k, v in counts.items()}
    keys = sorted(counts)
    backend_device = _collective_device()
    total = torch.tensor([int(counts[k]) for k in keys], dtype=torch.long, device=backend_device)
    dist.all_reduce(total)
    return {k: int(v) for k, v in zip(keys, total.tolist())}


def any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on at least one rank."""
    _, world = rank_and_world()
    if world == 1:
        return flag
    value = torch.tensor([int(flag)], dtype=torch.long, device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def barrier() -> None:
    """Wait until every rank gets here."""
    if rank_and_world()[1] > 1:
        dist.barrier()


def gather_lists(items: list) -> list:
    """Every rank's ``items`` (picklable), concatenated in rank order, on every rank."""
    _, world = rank_and_world()
    if world == 1:
        return list(items)
    parts: list = [None] * world
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


def _collective_device() -> torch.device:
    """Where a tensor of a collective must live: the GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
