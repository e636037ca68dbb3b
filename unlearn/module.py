"""One LightningModule trains every objective; Lightning owns loops, precision and strategies."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any

import lightning as L
import torch

from unlearn.errors import UserError
from unlearn.methods.base import LossOutput, Objective

SCHEDULES: tuple[str, ...] = ("constant", "linear", "cosine", "wsd")


class DivergenceError(UserError, RuntimeError):
    """A non-finite training loss: the run stops, and no result is written for it."""


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
    """Rows of the first batch, also when it is a {"student", "teacher", "ids"} pair or a
    list of length groups."""
    first = next(iter(batch.values()))
    if isinstance(first, list):
        return sum(int(group["input_ids"].shape[0]) for group in first)
    return int(first["input_ids"].shape[0] if "input_ids" in first else first["ids"].shape[0])


class UnlearnModule(L.LightningModule):
    """Student model + objective (+ frozen reference when the objective asks for one)."""

    def __init__(self, model: torch.nn.Module, objective: Objective, optim: Mapping[str, Any],
                 reference: torch.nn.Module | None = None, clip_norm: float | None = None,
                 per_term: bool = False):
        """``clip_norm`` clips each manual step (Lightning's ``gradient_clip_val`` applies to
        automatic optimisation only). ``per_term`` backpropagates each of the objective's
        :meth:`~Objective.terms` before building the next (same gradient as their sum, peak
        memory of the largest term)."""
        super().__init__()
        self.model = model
        self.objective = objective
        self.optim = dict(optim)
        self.reference = reference
        self.clip_norm = clip_norm
        # several backward passes or optimizer steps per batch need manual optimisation
        self.automatic_optimization = not (objective.multi_step or per_term)
        if reference is not None:
            reference.eval().requires_grad_(False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The frozen reference never changes: a resumable state need not hold a copy."""
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items()
                                    if not k.startswith("reference.")}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.reference is not None:
            checkpoint["state_dict"].update(
                {f"reference.{k}": v for k, v in self.reference.state_dict().items()})

    def on_fit_start(self) -> None:
        self.check_world_size(self.trainer.world_size)

    def check_world_size(self, world_size: int) -> None:
        """Manual optimisation runs in one process (called by ``fit`` before Lightning
        prepares the loaders for DDP, and again at the start of fitting)."""
        if not self.automatic_optimization and world_size > 1:
            raise NotImplementedError(
                "several backward passes or optimizer steps per batch (method.backward_per_term"
                "=true, method.schedule=official) run in one process only; turn them off "
                "with DDP")

    def training_step(self, batch: Mapping[str, Mapping[str, torch.Tensor]], batch_idx: int):
        bs = batch_size_of(batch)
        if self.automatic_optimization:
            out = self.objective(self.model, batch, self.reference)
            self._check_finite(out)
            self._log(out.loss, out.parts, bs)
            # a loss that reaches no trainable weight (text-only items under a visual scope)
            # has no backward: the optimizer steps over parameters without gradients
            return out.loss if out.loss.requires_grad else None
        opt, sched = self.optimizers(), self.lr_schedulers()
        losses, parts = [], {}
        for terms in self._manual_steps(batch, batch_idx):
            opt.zero_grad()
            backward = False
            for out in terms:  # lazy: each term's graph is freed before the next is built
                self._check_finite(out)
                losses.append(out.loss.detach())
                parts |= out.parts
                if out.loss.requires_grad:  # reaches no trainable weight (text-only, vision)
                    self.manual_backward(out.loss)
                    backward = True
            if not backward:
                continue
            if self.clip_norm:
                self.clip_gradients(opt, gradient_clip_val=self.clip_norm,
                                    gradient_clip_algorithm="norm")
            opt.step()
        sched.step()
        self._log(torch.stack(losses).sum(), parts, bs)
        return None

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer,
                                    gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Under FSDP the norm spans every rank's shards: the root unit computes it
        (Lightning's FSDP precision plugin refuses to clip by norm itself)."""
        from torch.distributed.fsdp import FullyShardedDataParallel

        root = self.trainer.strategy.model
        if (gradient_clip_val and isinstance(root, FullyShardedDataParallel)
                and gradient_clip_algorithm in (None, "norm")):
            root.clip_grad_norm_(gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def _check_finite(self, out: LossOutput) -> None:
        """Stop at the first non-finite loss: a diverged model is never evaluated as if it
        had unlearned (forget accuracy 0 reads as perfect unlearning)."""
        if bool(torch.isfinite(out.loss.detach()).all()):
            return
        bad = [f"{name}={float(v):.4g}" for name, v in out.parts.items()
               if not bool(torch.isfinite(torch.as_tensor(v)).all())]
        lr = self.trainer.optimizers[0].param_groups[0]["lr"] if self._trainer else None
        raise DivergenceError(
            f"training diverged at step {self.global_step}: loss={float(out.loss):.4g}"
            + (f" ({', '.join(bad)})" if bad else "")
            + (f" at lr {lr:.3g}" if lr is not None else "")
            + "; lower the learning rate (method.optim.lr) or check the objective's settings")

    def _manual_steps(self, batch: Mapping[str, Mapping[str, torch.Tensor]], batch_idx: int
                      ) -> Iterator[Iterator[LossOutput]]:
        """Optimizer steps of one batch, each as the loss terms to backpropagate."""
        if self.objective.multi_step:
            for out in self.objective.step_losses(self.model, batch, self.reference, batch_idx):
                yield iter((out,))
        else:
            yield self.objective.terms(self.model, batch, self.reference)

    def _log(self, loss: torch.Tensor, parts: Mapping[str, torch.Tensor], bs: int) -> None:
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=bs)
        for name, value in parts.items():
            self.log(f"train/{name}", value, batch_size=bs)

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
