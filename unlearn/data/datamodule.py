"""Named sample sets -> one combined training loader (Lightning's CombinedLoader).

The first set defines the epoch; every other set is drawn at random to the same number of
samples, so each step pairs e.g. a forget batch with a retain batch (OpenUnlearning style).
``collate`` is one function for every set or one per set name (a teacher-view pair collator
for the forget set, the plain collator for the retain set).
A split ``aligned`` to another (built from it item by item) is drawn in exactly its order.
A ``one_pass`` split is drawn once per epoch instead, in a shuffled order, its batches spread
evenly over the epoch's steps and an empty batch (``{}``) at the other steps
(:class:`~unlearn.data.resumable.OnePassBatchSampler`; MMUnlearner's official schedule).
Every loader can be restarted mid-epoch from a Lightning checkpoint (:mod:`.resumable`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import lightning as L
from lightning.pytorch.utilities import CombinedLoader
from torch.utils.data import DataLoader, Dataset

from unlearn.data.resumable import (
    OnePassBatchSampler,
    ResumableLoader,
    ResumableSampler,
    SkipEmpty,
)
from unlearn.data.schema import Sample


class UnlearnDataModule(L.LightningDataModule):
    def __init__(self, splits: Mapping[str, Sequence[Sample] | Dataset],
                 collate: Callable | Mapping[str, Callable],
                 batch_size: int, seed: int = 0,
                 aligned: Mapping[str, str] | None = None, one_pass: Sequence[str] = ()):
        super().__init__()
        empty = [name for name, samples in splits.items() if not samples]
        if not splits or empty:
            raise ValueError(f"empty training split(s): {empty or 'none given'}")
        self.aligned = dict(aligned or {})
        self.one_pass = tuple(one_pass)
        first = next(iter(splits))
        for name in self.one_pass:
            if name not in splits or name == first or name in self.aligned:
                raise ValueError(f"one-pass split {name!r}: it must be loaded, and neither the "
                                 f"first split ({first!r}, which defines the epoch) nor aligned")
        for name, source in self.aligned.items():
            if name not in splits or source not in splits:
                raise ValueError(f"aligned split {name!r} -> {source!r}: both must be loaded")
            if len(splits[name]) != len(splits[source]):
                raise ValueError(f"aligned split {name!r} has {len(splits[name])} items, "
                                 f"{source!r} has {len(splits[source])}")
        # a Dataset (e.g. hint items drawn fresh every epoch) is kept as is, other sequences copied
        self.splits = {name: samples if isinstance(samples, Dataset) else list(samples)
                       for name, samples in splits.items()}
        self.collate, self.batch_size = collate, batch_size
        self.seed = seed

    def train_dataloader(self) -> CombinedLoader:
        return CombinedLoader(self.loaders(), mode="max_size_cycle")

    def loaders(self) -> dict[str, DataLoader]:
        """One plain DataLoader per split, each as long as the first: the batches
        :meth:`train_dataloader` combines, for loops without Lightning (``unlearn.bench``)."""
        names = list(self.splits)
        n_primary = len(self.splits[names[0]])
        loaders = {}
        for name in names:
            # an aligned split reuses its source's seed and length: the same index sequence
            i = names.index(self.aligned.get(name, name))
            data = self.splits[name]
            collate = self.collate[name] if isinstance(self.collate, Mapping) else self.collate
            if name in self.one_pass:
                steps = -(-n_primary // self.batch_size)  # the first split's batches
                batches = OnePassBatchSampler(len(data), self.batch_size, steps, seed=self.seed + i)
                loaders[name] = ResumableLoader(data, batch_sampler=batches,
                                                collate_fn=SkipEmpty(collate))
                continue
            sampler = ResumableSampler(data, num_samples=n_primary if i else None,
                                       seed=self.seed + i)
            loaders[name] = ResumableLoader(data, batch_size=self.batch_size, sampler=sampler,
                                            collate_fn=collate)
        return loaders
