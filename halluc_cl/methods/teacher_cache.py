"""The cached teacher: the frozen snapshot's top-k log-probabilities on the distilled positions.

The teacher is frozen and the SFT examples are fixed, so its softened distribution at every
distilled position can be computed once, at the snapshot, and read back every epoch instead
of running a teacher forward per step (and keeping a second copy of the model). Each position
keeps the ``k`` most likely tokens' log-probabilities and the log of the remaining (tail)
mass. The divergence is then taken between the two distributions coarse-grained to those
``k + 1`` outcomes (the ``k`` tokens and "any other token"), which by the data-processing
inequality never exceeds the full-vocabulary one and equals it as the tail mass vanishes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from halluc_cl.errors import TrainingError
from halluc_cl.lm.modes import eval_mode
from halluc_cl.methods.teacher import Teacher, TeacherTargets, tail_log_mass


class TeacherCache:
    """Top-k teacher log-probabilities per training example, keyed by the batch's ``keys``.

    Args:
        top_k: Tokens kept per position.
        temperature: Softmax temperature the log-probabilities are taken at.
    """

    def __init__(self, top_k: int, temperature: float) -> None:
        self.top_k, self.temperature = top_k, temperature
        self.entries: dict[str, tuple[Tensor, Tensor, Tensor]] = {}  # key -> pos, index, log p
        self._pack: dict | None = None  # the entries as flat tensors (see _packed)

    def __len__(self) -> int:
        return len(self.entries)

    @torch.no_grad()
    def build(self, model, examples: list[tuple[str, dict]], collate, mask_fn,
              batch_size: int = 64) -> None:
        """Run the (snapshot) model once over every example and keep its top-k.

        Args:
            model: The model at the snapshot.
            examples: ``(key, row)`` pairs; ``collate([row, ...])`` makes a batch.
            collate: Rows -> a batch with ``input_ids`` and ``attention_mask`` (the data
                module's training collate for SFT examples, ``ExtraInputs.collate`` for the
                extra-input pool).
            mask_fn: ``batch -> [B, T']`` bool mask of the distilled logit positions
                (``T' = T - 1`` for positions that predict a token of the row, ``T`` for
                every real position).
            batch_size: Examples per forward pass.
        """
        device = next(model.parameters()).device
        with eval_mode(model):
            for start in range(0, len(examples), batch_size):
                chunk = examples[start:start + batch_size]
                batch = collate([row for _, row in chunk])
                ids = batch["input_ids"].to(device)
                logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device)).logits
                mask = mask_fn(batch).to(device)
                for r, (key, _) in enumerate(chunk):
                    pos = mask[r].nonzero().squeeze(-1)
                    log_p = F.log_softmax(logits[r, pos].float() / self.temperature, dim=-1)
                    top, index = log_p.topk(min(self.top_k, log_p.shape[-1]), dim=-1)
                    self.entries[key] = (pos.cpu().int(), index.cpu().int(), top.cpu())

    def _packed(self, device) -> dict:
        """The entries as flat tensors on ``device`` with per-key offsets (built once)."""
        packed = self._pack
        if packed is None or packed["device"] != device or packed["n"] != len(self.entries):
            state = self.state_dict()
            counts = state["counts"]
            packed = {"device": device, "n": len(self.entries),
                      "id": {k: i for i, k in enumerate(state["keys"])},
                      "counts": counts.to(device), "starts": (counts.cumsum(0) - counts).to(device),
                      "pos": state["pos"].long().to(device),
                      "index": state["index"].long().to(device),
                      "log_p": state["log_p"].to(device)}
            self._pack = packed
        return packed

    def lookup(self, keys: list[str], device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Rows, positions, token indices and teacher bucket log-probs of a batch's examples
        (a few vectorised gathers from the packed cache, whatever the batch size)."""
        missing = [k for k in keys if k not in self.entries]
        if missing:
            raise TrainingError(f"no cached teacher outputs for training examples {missing[:3]}; "
                                "the data differ from those the cache was built on (start the "
                                "run from scratch)")
        packed = self._packed(torch.device(device))
        ids = torch.tensor([packed["id"][k] for k in keys], device=packed["counts"].device)
        counts, starts = packed["counts"][ids], packed["starts"][ids]
        rows = torch.repeat_interleave(torch.arange(len(keys), device=ids.device), counts)
        first = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
        flat = torch.repeat_interleave(starts, counts) + torch.arange(len(rows),
                                                                      device=ids.device) - first
        teacher = packed["log_p"][flat]
        teacher = torch.cat([teacher, tail_log_mass(teacher)[:, None]], dim=-1)
        return rows, packed["pos"][flat], packed["index"][flat], teacher

    def state_dict(self) -> dict:
        """Flat tensors (checkpoint-safe under ``weights_only``)."""
        keys = list(self.entries)
        if not keys:
            return {"keys": [], "top_k": self.top_k, "temperature": self.temperature}
        counts = torch.tensor([len(self.entries[k][0]) for k in keys])
        return {"keys": keys, "counts": counts, "top_k": self.top_k,
                "temperature": self.temperature,
                "pos": torch.cat([self.entries[k][0] for k in keys]),
                "index": torch.cat([self.entries[k][1] for k in keys]),
                "log_p": torch.cat([self.entries[k][2] for k in keys])}

    def load_state_dict(self, state: dict) -> None:
        self.top_k, self.temperature = state["top_k"], state["temperature"]
        self.entries, self._pack = {}, None
        if not state["keys"]:
            return
        bounds = [0, *torch.cumsum(state["counts"], 0).tolist()]
        for key, a, b in zip(state["keys"], bounds[:-1], bounds[1:]):
            self.entries[key] = (state["pos"][a:b], state["index"][a:b], state["log_p"][a:b])


class CachedTopKTeacher(Teacher):
    """The ``Teacher`` read from a ``TeacherCache``: no model, no forward after the build.

    Its positions are those the cache was built on (the ``mask_fn`` of ``build``), looked up
    by the batch's ``keys``; ``targets`` keeps those where ``mask`` is true.

    Args:
        top_k: Tokens kept per position.
        temperature: Softmax temperature the log-probabilities are taken at.
    """

    def __init__(self, top_k: int, temperature: float) -> None:
        super().__init__()
        self.cache = TeacherCache(top_k, temperature)

    def build(self, model, examples: list[tuple[str, dict]], collate, mask_fn) -> None:
        """``TeacherCache.build``."""
        self.cache.build(model, examples, collate, mask_fn)

    def targets(self, inputs: dict, mask: Tensor) -> TeacherTargets:
        """The cached positions of the ``inputs["keys"]`` rows, those where ``mask`` is true
        (``mask`` as the cache's ``mask_fn`` gives it, or narrower)."""
        rows, pos, index, log_t = self.cache.lookup(inputs["keys"], inputs["input_ids"].device)
        keep = mask.to(rows.device)[rows, pos]
        rows, pos, index, log_t = rows[keep], pos[keep], index[keep], log_t[keep]
        return TeacherTargets(rows, pos, log_t, index)

    def state_dict(self) -> dict:
        """The cache's flat tensors (they are the teacher: checkpoint-safe, no weights)."""
        return self.cache.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.cache.load_state_dict(state)
