"""One LightningModule trains every objective; Lightning owns loops, precision and strategies."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

from unlearn.methods.base import Objective

SCHEDULES: tuple[str, ...] = ("constant", "linear", "cosine", "wsd")


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int, decay_fraction: float = 0.2):
    """Multiplier of the base LR at a step: linear warm-up, then constant/linear/cosine decay.

    ``wsd`` (warmup-stable-decay) holds the LR until the last ``decay_fraction`` of the steps
    and then decays linearly to 0: a long high-LR phase is what lets the tiny model cross
    its multiple-choice phase transition, the short decay settles the memorised facts.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule={schedule!r} is not one of {list(SCHEDULES)}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        if schedule == "wsd":
            return min(1.0, (total_steps - step) / max(1.0, decay_fraction * total_steps))
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(progress * math.pi))

    return factor


def batch_size_of(batch: Mapping[str, Any]) -> int:
    """Rows of the first batch, also when it is a {"student", "teacher", "ids"} pair."""
    first = next(iter(batch.values()))
    return int(first["input_ids"].shape[0] if "input_ids" in first else first["ids"].shape[0])


class UnlearnModule(L.LightningModule):
    """Student model + objective (+ frozen reference when the objective asks for one)."""

    def __init__(self, model: torch.nn.Module, objective: Objective, optim: Mapping[str, Any],
                 reference: torch.nn.Module | None = None):
        super().__init__()
        self.model = model
        self.objective = objective
        self.optim = dict(optim)
        self.reference = reference
        if reference is not None:
            reference.eval().requires_grad_(False)

    def training_step(self, batch: Mapping[str, Mapping[str, torch.Tensor]], batch_idx: int):
        out = self.objective(self.model, batch, self.reference)
        bs = batch_size_of(batch)
        self.log("train/loss", out.loss.detach(), prog_bar=True, batch_size=bs)
        for name, value in out.parts.items():
            self.log(f"train/{name}", value, batch_size=bs)
        return out.loss

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("no trainable parameters: check trainable_modules")
        opt = torch.optim.AdamW(
            params, lr=float(self.optim["lr"]),
            weight_decay=float(self.optim.get("weight_decay", 0.0)),
            betas=tuple(self.optim.get("betas", (0.9, 0.999))),
        )
        total = int(self.trainer.estimated_stepping_batches)
        warmup = int(self.optim.get("warmup_steps", 0))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lr_lambda(self.optim.get("schedule", "linear"), warmup, total,
                           float(self.optim.get("decay_fraction", 0.2)))
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
