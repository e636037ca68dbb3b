"""Multiple-choice hint items: a warm-up that teaches a tiny model to bind option letters.

A randomly initialised model learns facts long before it learns to emit the *letter* of the
option that matches a fact. Items that state the answer (``Hint: 1955.``) before the
question isolate that second step; a short phase on them before the vanilla epochs lets the
skill carry over to questions without a hint, and a share of fresh hint items in every
epoch keeps it from fading (experiments/foundation.md).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from torch.utils.data import Dataset

from unlearn.data.schema import Sample

HINT = "Hint: {answer}.\n{question}"


class FreshHints(Dataset):
    """``n`` slots of hint items; each epoch draws a new item into every slot.

    Each epoch therefore sees hint items it has not seen before (a fixed set repeated every
    epoch taught much less: its letters can be memorised), yet the stream is deterministic:
    the item is a function of ``seed``, the slot and the epoch, which the loader's sampler
    sets (:class:`~unlearn.data.resumable.ResumableSampler`), so a run restarted from a
    checkpoint draws the items the interrupted run would have drawn.

    Only items whose answer is one of their option letters qualify (refusal items of the ICU
    practice do not); the real ``ft_Data`` has none, which is an error here.
    """

    def __init__(self, samples: Sequence[Sample], n: int, seed: int):
        self.mcq = [s for s in samples if is_letter_item(s)]
        if not self.mcq:
            raise ValueError("the multiple-choice warm-up needs fine-tuning items with options "
                             "(the synthetic twin has them, the real ft_Data does not); "
                             "set model.vanilla.mcq_warmup.steps=0")
        self.seed, self.n, self.epoch = seed, n, 0

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, slot: int) -> Sample:
        rng = random.Random(f"hints-{self.seed}-{slot}-{self.epoch}")
        s = reshuffled(rng.choice(self.mcq), rng)
        return dataclasses.replace(
            s, question=HINT.format(answer=s.options[s.answer], question=s.question))


class FreshOptions(Dataset):
    """``samples`` with the options of every multiple-choice item reshuffled each epoch.

    A fixed option order lets a tiny model memorise each training item's letter instead of
    learning to pick the option that matches the fact it recalls; a new order every epoch
    (a function of ``seed``, the item and the epoch, as in :class:`FreshHints`) leaves only
    the second way.
    """

    def __init__(self, samples: Sequence[Sample], seed: int):
        self.samples, self.seed, self.epoch = list(samples), seed, 0

    def __len__(self) -> int:
        return len(self.samples)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __getitem__(self, index: int) -> Sample:
        s = self.samples[index]
        if not is_letter_item(s):
            return s
        return reshuffled(s, random.Random(f"options-{self.seed}-{index}-{self.epoch}"))


def is_letter_item(s: Sample) -> bool:
    """A multiple-choice item answered by one of its option letters (not an ICU refusal)."""
    return bool(s.options) and s.answer in s.options


def reshuffled(s: Sample, rng: random.Random) -> Sample:
    """``s`` with its option values in a new order drawn from ``rng`` and the answer letter
    moved with the right one."""
    truth = s.options[s.answer]
    values = list(s.options.values())
    rng.shuffle(values)
    options = dict(zip(s.options, values, strict=True))
    letter = next(k for k, v in options.items() if v == truth)
    return dataclasses.replace(s, options=options, answer=letter)
