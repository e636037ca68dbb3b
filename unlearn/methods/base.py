"""The objective interface: a method is a loss over named batches, not a training loop."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from unlearn.data.collate import View


@dataclass
class LossOutput:
    """Total loss to minimise plus named detached parts for logging."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


class Objective:
    """Base class of every unlearning (and fine-tuning) objective.

    ``splits`` names the batches the objective consumes (the data module builds one loader
    per name, the first being the epoch-defining one); ``needs_reference`` asks the module
    for a frozen copy of the pre-unlearning model; ``views`` asks for a teacher encoding of
    the same samples next to the clean one.
    """

    splits: tuple[str, ...] = ("forget",)
    needs_reference: bool = False
    # split -> teacher View: those batches arrive as {"student", "teacher", "ids"} pairs
    views: Mapping[str, View] = {}

    def __call__(self, model: torch.nn.Module, batch: Mapping[str, Mapping[str, torch.Tensor]],
                 reference: torch.nn.Module | None = None) -> LossOutput:
        raise NotImplementedError
