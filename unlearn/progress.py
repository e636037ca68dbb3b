"""Plain progress lines for training when the output is not a terminal (Slurm logs, files,
pipes): a live progress bar prints nothing there until a stage ends."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import lightning as L

from unlearn.module import batch_size_of

log = logging.getLogger(__name__)

# Seconds between two plain lines (``progress.every_s``; 0: every step). One value for the
# process: it suits where the output goes, not a stage's recipe.
_every_s = 30.0


def configure(every_s: float) -> None:
    """Set the interval of the plain lines of every later stage (the pipeline calls it)."""
    global _every_s
    _every_s = float(every_s)


def interactive() -> bool:
    """True when stdout is a terminal, where Lightning's live bar serves."""
    return sys.stdout.isatty()


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class PlainProgress(L.Callback):
    """Every ``every_s`` seconds (default: :func:`configure`'s; and at the last step) one log
    line: stage, step/total, loss, sequences/s, ETA."""

    def __init__(self, stage: str, every_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stage, self.clock = stage, clock
        self.every_s = _every_s if every_s is None else every_s
        self.start = self.last = 0.0
        self.sequences = self.first_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = self.last = self.clock()
        self.sequences = 0
        self.first_step = trainer.global_step  # > 0 when the stage resumed from a checkpoint

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self.sequences += batch_size_of(batch)
        now, step = self.clock(), trainer.global_step
        total = int(trainer.estimated_stepping_batches)
        if now - self.last < self.every_s and step < total:
            return
        self.last, elapsed = now, max(now - self.start, 1e-9)
        loss = trainer.callback_metrics.get("train/loss")
        eta = elapsed / max(step - self.first_step, 1) * (total - step)
        log.info("%s: step %d/%d (%d%%), loss %s, %.1f seq/s, ETA %s", self.stage, step, total,
                 100 * step // max(total, 1), "-" if loss is None else f"{float(loss):.4f}",
                 self.sequences / elapsed, _duration(eta))
