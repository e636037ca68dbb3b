"""Shuffling samplers and a loader that a Lightning checkpoint can restart mid-epoch, exactly.

:class:`ResumableSampler` draws a split's indices; :class:`OnePassBatchSampler` draws a
split's batches as one pass per epoch spread over the epoch's steps (MMUnlearner's official
schedule). Both restart the same way.

The batches after a restart are the ones the interrupted run would have drawn next: the
sampler draws ``RandomSampler``'s very stream from one generator that lives across epochs,
and its state is that generator's state when the current epoch began plus how many indices
(batches, for the one-pass sampler) the epoch has handed out. Restoring replays the epoch's
draws up to that point (cheap: index permutations, no data), so the generator ends each epoch
where it did without the restart.

Lightning saves a loader's ``state_dict`` in its checkpoints and restores it before the next
epoch's iterator is drawn from, for any loader that has ``state_dict``/``load_state_dict``.

Under DDP the sampler shards the same stream itself (Lightning's distributed sampler would
reshuffle it): rank r of w takes every w-th index, so w processes with batch b see, step by
step, the items one process with batch w*b sees.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence, Sized
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


class _RestartableDraws:
    """What both samplers keep to restart: one generator across epochs, its state when the
    epoch began, how far the epoch has got, and a loaded (epoch, position) to replay."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch = 0
        self.epoch_start = self.generator.get_state()  # generator state when the epoch began
        self.position = 0  # how far the current epoch has got
        self.restored: tuple[int, int] | None = None  # (epoch, position) of a loaded state

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _end_epoch(self) -> None:
        """The epoch is exhausted: a state saved from now on starts the next one."""
        self.epoch += 1
        self.epoch_start, self.position = self.generator.get_state(), 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position,
                "epoch_start": self.epoch_start.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.epoch_start = state["epoch_start"]
        self.restored = (self.epoch, int(state["position"]))


class ResumableSampler(_RestartableDraws, Sampler[int]):
    """``RandomSampler(data, num_samples, generator=Generator().manual_seed(seed))``, whose
    position can be saved and restored.

    The epoch counts itself (a plain loop without Lightning draws the same stream as the
    trainer); Lightning's ``set_epoch`` calls agree with that count. In a process group the
    rank's share of each block of ``world`` indices is handed out; a short last block is
    padded with the epoch's first indices (as ``DistributedSampler``), so every rank takes
    the same number of steps.
    """

    def __init__(self, data: Sized, num_samples: int | None = None, seed: int = 0):
        super().__init__(seed)
        self.data = data
        self.draws = RandomSampler(data, num_samples=num_samples, generator=self.generator)
        grouped = dist.is_available() and dist.is_initialized()
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if grouped else (0, 1)

    def __len__(self) -> int:
        return math.ceil(len(self.draws) / self.world)

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
        self._end_epoch()


def one_pass_spacing(steps: int, batches: int) -> int:
    """Steps between the batches of a one-pass split: ``steps // batches``, at least 1 (the
    official MMUnlearner script's ``forget_freq = len(retain_loader) // len(forget_loader)``)."""
    return max(1, steps // max(1, batches))


class OnePassBatchSampler(_RestartableDraws, Sampler[list[int]]):
    """One sequential pass over ``n`` items per epoch, in batches spread over ``steps`` steps.

    The order is ``torch.randperm(n)`` from a generator seeded with ``seed``: the order
    ``RandomSampler`` (a ``DataLoader(shuffle=True)``'s sampler) draws with that generator.
    Batch j of it (``batch_size``
    consecutive items) comes at step j·k, k = :func:`one_pass_spacing`; every other step
    gets an empty batch, and so do the steps after the pass. Each item is drawn exactly once
    per epoch (unless there are fewer steps than batches: then the pass stops with the
    epoch). The next epoch draws a new order from the same generator.

    Restartable like :class:`ResumableSampler`: the state is the generator's state when the
    epoch began plus how many steps the epoch has handed out.
    """

    def __init__(self, n: int, batch_size: int, steps: int, seed: int = 0):
        if n < 1 or batch_size < 1 or steps < 1:
            raise ValueError(f"need n, batch_size, steps >= 1, got {n}, {batch_size}, {steps}")
        self.n, self.batch_size, self.steps = n, batch_size, steps
        self.batches = -(-n // batch_size)
        self.every = one_pass_spacing(steps, self.batches)
        super().__init__(seed)  # position: steps handed out in the current epoch

    def __len__(self) -> int:
        return self.steps

    def _order(self) -> list[int]:
        return torch.randperm(self.n, generator=self.generator).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        if self.restored is not None:
            epoch, position = self.restored
            self.restored = None
            self.generator.set_state(self.epoch_start)
            order = self._order()
            if epoch == self.epoch:  # resume inside that epoch
                yield from self._hand_out(order, position)
                return
            # it had ended: the generator stands where that epoch left it
        self.epoch_start = self.generator.get_state()
        yield from self._hand_out(self._order(), 0)

    def _hand_out(self, order: list[int], position: int) -> Iterator[list[int]]:
        self.position = position
        for step in range(position, self.steps):
            self.position += 1
            j, off = divmod(step, self.every)
            if off == 0 and j < self.batches:
                yield order[j * self.batch_size:(j + 1) * self.batch_size]
            else:
                yield []
        self._end_epoch()


class SkipEmpty:
    """A collate function that turns an empty batch (a step without a batch of a one-pass
    split) into ``{}`` instead of encoding nothing."""

    def __init__(self, collate: Callable[[Sequence[Any]], Any]):
        self.collate = collate

    def __call__(self, samples: Sequence[Any]) -> Any:
        return self.collate(samples) if len(samples) else {}


class ResumableLoader(DataLoader):
    """A DataLoader whose ``state_dict`` is its :class:`ResumableSampler`'s or
    :class:`OnePassBatchSampler`'s (Lightning saves it in checkpoints). Loads in the main
    process: a worker would draw ahead of the steps taken."""

    def _resumable(self) -> _RestartableDraws | None:
        for sampler in (self.batch_sampler, self.sampler):
            if isinstance(sampler, _RestartableDraws):
                return sampler
        return None

    def state_dict(self) -> dict[str, Any]:
        sampler = self._resumable()
        return sampler.state_dict() if sampler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sampler = self._resumable()
        if state and sampler is not None:
            sampler.load_state_dict(state)
