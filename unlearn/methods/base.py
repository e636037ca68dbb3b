"""The objective interface: a method is a loss over named batches, not a training loop."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from unlearn.data.schema import Sample


@dataclass
class LossOutput:
    """Total loss to minimise plus named detached parts for logging."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Setup:
    """What an objective may use before training besides the model and its sample sets.

    ``provenance`` holds what a cache built from the model must be keyed by (model and data
    fingerprints, trainable scope, ...); ``collate`` encodes samples exactly as training does.
    """

    collate: Callable[[Sequence[Sample]], dict[str, torch.Tensor]]
    batch_size: int
    seed: int
    cache_dir: Path
    run_dir: Path
    provenance: dict[str, Any] = field(default_factory=dict)


class Objective:
    """Base class of every unlearning (and fine-tuning) objective.

    ``splits`` names the batches the objective consumes (the data module builds one loader
    per name, the first being the epoch-defining one); ``needs_reference`` asks the module
    for a frozen copy of the pre-unlearning model.

    Optional hooks, no-ops by default: :meth:`prepare` (work on the pre-unlearning model, e.g.
    saliency masks), :meth:`select` (which samples of a split train) and, for objectives that
    make several optimizer steps per batch (``multi_step``), :meth:`step_losses`.
    """

    splits: tuple[str, ...] = ("forget",)
    needs_reference: bool = False
    multi_step: bool = False

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, Mapping[str, torch.Tensor]],
                 reference: torch.nn.Module | None = None) -> LossOutput:
        raise NotImplementedError

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
