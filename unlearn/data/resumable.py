"""A shuffling sampler and loader that a Lightning checkpoint can restart mid-epoch, exactly.

The batches after a restart are the ones the interrupted run would have drawn next: the
sampler draws ``RandomSampler``'s very stream from one generator that lives across epochs,
and its state is that generator's state when the current epoch began plus how many indices
the epoch has handed out. Restoring replays the epoch's draws up to that point (cheap: index
permutations, no data), so the generator ends each epoch where it did without the restart.

Lightning saves a loader's ``state_dict`` in its checkpoints and restores it before the next
epoch's iterator is drawn from, for any loader that has ``state_dict``/``load_state_dict``.

Under DDP the sampler shards the same stream itself (Lightning's distributed sampler would
reshuffle it): rank r of w takes every w-th index, so w processes with batch b see, step by
step, the items one process with batch w*b sees.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sized
from itertools import islice
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, RandomSampler, Sampler


def tell_epoch(data: Any, epoch: int) -> None:
    """Pass the epoch to a dataset (or the parts of a ``ConcatDataset``) whose items depend
    on it (:class:`~unlearn.data.hints.FreshHints`)."""
    for part in getattr(data, "datasets", [data]):
        if callable(getattr(part, "set_epoch", None)):
            part.set_epoch(epoch)


class ResumableSampler(Sampler[int]):
    """``RandomSampler(data, num_samples, generator=Generator().manual_seed(seed))``, whose
    position can be saved and restored.

    The epoch counts itself (a plain loop without Lightning draws the same stream as the
    trainer); Lightning's ``set_epoch`` calls agree with that count. In a process group the
    rank's share of each block of ``world`` indices is handed out; a short last block is
    padded with the epoch's first indices (as ``DistributedSampler``), so every rank takes
    the same number of steps.
    """

    def __init__(self, data: Sized, num_samples: int | None = None, seed: int = 0):
        self.data = data
        self.generator = torch.Generator().manual_seed(seed)
        self.draws = RandomSampler(data, num_samples=num_samples, generator=self.generator)
        self.epoch = 0
        self.epoch_start = self.generator.get_state()  # generator state when the epoch began
        self.position = 0  # indices handed out in the current epoch
        self.restored: tuple[int, int] | None = None  # (epoch, position) of a loaded state
        grouped = dist.is_available() and dist.is_initialized()
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if grouped else (0, 1)

    def __len__(self) -> int:
        return math.ceil(len(self.draws) / self.world)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if self.restored is not None:
            epoch, position = self.restored
            self.restored = None
            self.generator.set_state(self.epoch_start)
            stream = iter(self.draws)
            replayed = list(islice(stream, position))  # replay the saved epoch's draws
            if epoch == self.epoch:  # resume inside that epoch
                yield from self._hand_out(stream, position, replayed[:self.world])
                return
            stream.close()  # it had ended: the generator stands where that epoch left it
        self.epoch_start = self.generator.get_state()
        yield from self._hand_out(iter(self.draws), 0, [])

    def _hand_out(self, stream: Iterator[int], position: int, first: list[int]
                  ) -> Iterator[int]:
        """Hand out the rest of the epoch from global ``position`` on (``first``: the epoch's
        first indices seen so far, to pad a short last block)."""
        tell_epoch(self.data, self.epoch)
        self.position = position  # indices drawn from the epoch's stream, over all ranks
        block: list[int] = []
        for index in stream:
            self.position += 1
            if self.world == 1:
                yield index
                continue
            if len(first) < self.world:
                first.append(index)
            block.append(index)
            if len(block) == self.world:
                yield block[self.rank]
                block = []
        if block:
            yield (block + first)[self.rank]
        # exhausted: a state saved from now on starts the next epoch
        self.epoch += 1
        self.epoch_start, self.position = self.generator.get_state(), 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position,
                "epoch_start": self.epoch_start.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.epoch_start = state["epoch_start"]
        self.restored = (self.epoch, int(state["position"]))


class ResumableLoader(DataLoader):
    """A DataLoader whose ``state_dict`` is its :class:`ResumableSampler`'s (Lightning saves
    it in checkpoints). Loads in the main process: a worker would draw ahead of the steps
    taken, and datasets that count their reads need one copy."""

    def state_dict(self) -> dict[str, Any]:
        sampler = self.sampler
        return sampler.state_dict() if isinstance(sampler, ResumableSampler) else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state and isinstance(self.sampler, ResumableSampler):
            self.sampler.load_state_dict(state)
