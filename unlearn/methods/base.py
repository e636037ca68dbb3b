"""The objective interface: a method is a loss over named batches, not a training loop."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unlearn.data.collate import View
from unlearn.data.schema import Sample

SampleLoader = Callable[[str], list[Sample]]


@dataclass
class LossOutput:
    """Total loss to minimise plus named detached parts for logging."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Setup:
    """What an objective may use before training besides the model and its sample sets.

    ``provenance`` holds what a cache built from the model must be keyed by (model and data
    fingerprints, trainable scope, ...); ``collate`` encodes samples exactly as training does;
    ``bench`` is the benchmark (:class:`~unlearn.data.mllmu.MLLMUBench`), for data beyond the
    training splits (MMUnlearner's pure-text preserve questions).
    """

    collate: Callable[[Sequence[Sample]], dict[str, torch.Tensor]]
    batch_size: int
    seed: int
    cache_dir: Path
    run_dir: Path
    provenance: dict[str, Any] = field(default_factory=dict)
    bench: Any = None


class Objective:
    """Base class of every unlearning (and fine-tuning) objective.

    ``splits`` names the batches the objective consumes (the data module builds one loader
    per name, the first being the epoch-defining one); ``needs_reference`` asks the module
    for a frozen view of the pre-unlearning model; ``views`` asks for a teacher encoding of
    the same samples next to the clean one. ``aligned`` maps a derived split to the
    split it was built from item by item (PO's refusal answers to the forget questions), so
    the data module draws both in the same order and batch i of each holds the same prompts.
    ``length_groups`` says the objective takes a batch as a list of length groups
    (``Collator(length_groups=k)``), so a stage may ask for them. A split in ``one_pass`` is
    drawn once per epoch, its batches spread evenly over the epoch's steps and ``{}`` at the
    other steps (MMUnlearner's official schedule; :mod:`unlearn.data.datamodule`).

    Optional hooks, no-ops by default: :meth:`prepare` (work on the pre-unlearning model, e.g.
    saliency masks), :meth:`select` (which samples of a split train) and, for objectives that
    make several optimizer steps per batch (``multi_step``), :meth:`step_losses`.
    """

    splits: tuple[str, ...] = ("forget",)
    needs_reference: bool = False
    # split -> teacher View: those batches arrive as {"student", "teacher", "ids"} pairs
    views: Mapping[str, View] = {}
    aligned: Mapping[str, str] = {}
    one_pass: tuple[str, ...] = ()
    multi_step: bool = False
    length_groups: bool = False

    def train_sets(self, load: SampleLoader) -> dict[str, list[Sample]]:
        """The training samples of each split in ``splits``; ``load(name)`` reads a benchmark
        split (``forget``, ``retain``). Objectives that derive splits override this."""
        return {name: load(name) for name in self.splits}

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, Mapping[str, torch.Tensor]],
                 reference: torch.nn.Module | None = None) -> LossOutput:
        raise NotImplementedError

    def terms(self, model: torch.nn.Module, batch: Mapping[str, Mapping[str, torch.Tensor]],
              reference: torch.nn.Module | None = None) -> Iterator[LossOutput]:
        """The loss as additive terms, built lazily one after the other, so that the module
        can backpropagate each term before the next one's graph exists (peak memory = the
        largest term, not their sum: ``method.backward_per_term``). Default: one term."""
        yield self(model, batch, reference)

    def prepare(self, model: torch.nn.Module, sets: Mapping[str, Sequence[Sample]],
                setup: Setup) -> dict[str, Any]:
        """Called once after the trainable scope is set, before training; returns manifest
        entries. ``sets`` are the full training sets of :attr:`splits`, before :meth:`select`."""
        return {}

    def select(self, split: str, samples: Sequence[Sample]) -> list[Sample]:
        """The samples of ``split`` that train (all of them unless an objective narrows it)."""
        return list(samples)

    def step_losses(self, model: torch.nn.Module,
                    batch: Mapping[str, Mapping[str, torch.Tensor]],
                    reference: torch.nn.Module | None, batch_idx: int) -> Iterator[LossOutput]:
        """Losses of the optimizer steps one batch makes, in order, for ``multi_step``
        objectives; lazy, so each loss sees the parameters after the previous step."""
        yield self(model, batch, reference)


class TermwiseObjective(Objective):
    """An objective written as :meth:`terms` (e.g. a forget term and a retain term); its
    loss is their sum."""

    def __call__(self, model, batch, reference=None) -> LossOutput:
        return summed(self.terms(model, batch, reference))

    def terms(self, model, batch, reference=None) -> Iterator[LossOutput]:
        raise NotImplementedError


def summed(terms: Iterable[LossOutput]) -> LossOutput:
    """One LossOutput from additive terms: losses added, parts merged."""
    loss, parts = None, {}
    for term in terms:
        loss = term.loss if loss is None else loss + term.loss
        parts |= term.parts
    if loss is None:
        raise ValueError("an objective yielded no loss terms")
    return LossOutput(loss, parts)


def check_choice(key: str, value: str, allowed: tuple[str, ...]) -> str:
    """Objectives validate their own options too: they are instantiated after config checks."""
    if value not in allowed:
        raise ValueError(f"method.objective.{key}={value!r} is not one of {list(allowed)}")
    return value


def require_reference(objective: Objective, reference: torch.nn.Module | None
                      ) -> torch.nn.Module:
    """The reference, or a clear error when the caller forgot to pass one."""
    if reference is None:
        raise ValueError(f"{type(objective).__name__} needs a reference model "
                         "(needs_reference=True) but none was given")
    return reference
