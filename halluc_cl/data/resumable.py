"""The training loader of one epoch, resumable in the middle of the epoch.

Lightning keeps the ``state_dict()`` of a train loader that has one in every checkpoint, and
after ``--ckpt_path`` hands it to the new loader of the same epoch (``load_state_dict``) when
the checkpoint was saved mid-epoch. ``EpochBatches`` records how many batches of its epoch it
handed out, and a resumed pass starts after those: the resumed fit trains on exactly the
batches the interrupted one had not reached, in the same order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, DistributedSampler


class EpochBatches(DataLoader):
    """A loader over the ready-made batches of one epoch (``batch_size=None``).

    Args:
        dataset: The epoch's batches, in training order.
        epoch: The epoch they belong to; a saved position only applies to the same epoch.
        seed: Seed of the loader's own generator, so that starting a pass draws nothing
            from the global torch RNG (whose state a checkpoint restores exactly).

    The batches are in training order already and, under several processes, this process's
    share of every batch (``FactDataModule.train_dataloader``). A one-replica
    ``DistributedSampler`` (every batch, in order) tells Lightning so: with a distributed
    strategy (DDP or DeepSpeed, even on one device) it would otherwise give the loader its own
    ``DistributedSampler``, which shuffles the batches and deals out whole batches.
    """

    def __init__(self, dataset, epoch: int = 0, seed: int = 0, **kwargs) -> None:
        kwargs.setdefault("batch_size", None)
        kwargs.setdefault("generator", torch.Generator().manual_seed(seed))
        kwargs.setdefault("sampler", DistributedSampler(dataset, num_replicas=1, rank=0,
                                                        shuffle=False))
        super().__init__(dataset, **kwargs)
        self.epoch, self.seed = epoch, seed
        self.handed_out = 0  # batches of the current pass given to the trainer
        self._resume_at = 0

    def __iter__(self) -> Iterator:
        skip, self._resume_at = self._resume_at, 0
        self.handed_out = skip
        for batch in itertools.islice(super().__iter__(), skip, None):
            self.handed_out += 1
            yield batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches_done": self.handed_out}

    def load_state_dict(self, state: dict) -> None:
        if state.get("epoch") == self.epoch:
            self._resume_at = min(int(state.get("batches_done", 0)), len(self))
