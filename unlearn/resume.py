"""Resume a training stage after a kill: periodic and on-signal Lightning checkpoints.

A stage's checkpoint holds everything its next step depends on: weights, optimizer and
schedule, Lightning's loop counters, every loader's position (:mod:`unlearn.data.resumable`)
and the random generators. Rerunning the same command finds it (the vanilla stage under its
cache entry, the unlearning stage under the run's config fingerprint) and continues, so the
results equal an uninterrupted run's. SIGTERM (Slurm preemption, ``kill``) and SIGINT (Ctrl+C)
save at the end of the current step and stop; a kill -9 loses the steps since the last
periodic save.
"""

from __future__ import annotations

import logging
import random
import signal
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """A stage stopped by a signal after saving its state: the same command resumes it."""

    def __init__(self, signum: int, stage: str, step: int, path: Path):
        self.signum = signum
        super().__init__(f"{signal.Signals(signum).name} at step {step} of {stage}; its state "
                         f"is saved in {path}: rerun the same command to resume from there")


class ResumeCheckpoints(L.Callback):
    """Save the stage's state to ``path`` every ``every_n_steps`` optimizer steps (0: never
    periodically), at the end of training, and at the end of the step during which SIGTERM
    or SIGINT arrived (then raise :class:`Interrupted`). A second Ctrl+C stops at once."""

    def __init__(self, path: Path, every_n_steps: int, stage: str):
        self.path, self.every, self.stage = Path(path), every_n_steps, stage
        self.sigint = False
        self._previous: Any = None
        self._loader_states: list[dict[str, Any]] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.sigint = False
        self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _on_sigint(self, signum: int, frame: FrameType | None) -> None:
        self.sigint = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl+C: now

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        signum = (signal.SIGTERM if trainer.received_sigterm
                  else signal.SIGINT if self.sigint else None)
        step = trainer.global_step
        if signum is not None or (self.every and step % self.every == 0):
            self.save(trainer)
        if signum is not None:
            raise Interrupted(signum, self.stage, step, self.path)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save(trainer)  # a later kill (e.g. in evaluation) does not cost the training

    def save(self, trainer: L.Trainer) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # written to a temporary file, then moved; loaded back with weights_only=True
        trainer.save_checkpoint(self.path, weights_only=False)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        self._loader_states = checkpoint["loops"]["fit_loop"]["state_dict"].get(
            "combined_loader", [])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Restore the loaders' positions also when the save fell on an epoch's last step
        (Lightning restores them only for an unfinished epoch): the next epoch's order is
        drawn from where the saved one left the generator."""
        loaders = trainer.train_dataloader
        loaders = list(loaders.values()) if isinstance(loaders, Mapping) else [loaders]
        for loader, state in zip(loaders, self._loader_states, strict=False):
            loader.load_state_dict(state)
        self._loader_states = []

    def state_dict(self) -> dict[str, Any]:
        return {"torch": torch.get_rng_state(), "python": random.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        random.setstate(state["python"])


def checkpoint_step(path: Path) -> int | None:
    """The optimizer step a saved stage reached, or None when there is none to resume."""
    if not path.is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(state["global_step"])


def stage_checkpoint(cfg: DictConfig, directory: Path, name: str) -> dict[str, Any]:
    """``fit``'s arguments that save and resume a stage as ``directory/name.ckpt`` (none when
    ``resume.enabled`` is false)."""
    if not OmegaConf.select(cfg, "resume.enabled", default=False):
        return {}
    return {"checkpoint": Path(directory) / f"{name}.ckpt",
            "every_n_steps": int(cfg.resume.every_n_steps)}
