"""Resume a training stage after a kill: periodic and on-signal Lightning checkpoints.

A stage's checkpoint holds everything its next step depends on: weights, optimizer and
schedule, Lightning's loop counters, every loader's position (:mod:`unlearn.data.resumable`)
and the random generators. Rerunning the same command finds it (the vanilla stage under its
cache entry, the unlearning stage under the run's config fingerprint) and continues, so the
results equal an uninterrupted run's. SIGTERM (Slurm preemption, ``kill``) and SIGINT (Ctrl+C)
save at the end of the current step and stop, every rank of a DDP stage at the same step
(:class:`StopOnSignal`); a kill -9 loses the steps since the last periodic save.
"""

from __future__ import annotations

import ctypes
import logging
import os
import random
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """A stage stopped by a signal (after saving its state when it saves one): the same
    command resumes it."""

    def __init__(self, signum: int, stage: str, step: int | None, path: Path | None):
        self.signum = signum
        at = f"at step {step} of {stage}" if step is not None else f"in {stage}"
        then = (f"its state is saved in {path}: rerun the same command to resume from there"
                if path is not None else "no state is saved (resume.enabled=false)")
        super().__init__(f"{signal.Signals(signum).name} {at}; {then}")


SIGNALS = (signal.SIGTERM, signal.SIGINT)
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class StopOnSignal(L.Callback):
    """Stop a training stage, every rank of it, at the end of the step during which SIGTERM
    or SIGINT arrived, and raise :class:`Interrupted`. A second Ctrl+C stops at once.

    Why each part (``python -m unlearn trainer=ddp_cpu`` stopped by ``timeout`` or ``kill``
    left both forked ranks running for good, holding their devices):

    * A rank's handler only records the signal. Lightning's own SIGTERM handler broadcasts
      from inside the handler; the other rank is in another collective at that moment (a
      gradient all-reduce), so both wait for each other forever, and a Python handler never
      runs again in a process blocked in C++: SIGTERM is ignored from then on.
    * At the end of every step the ranks agree on the largest signal any of them recorded
      (one tiny all-reduce): all stop at the same step, the state is saved where the stage
      saves it (:class:`ResumeCheckpoints`), all raise :class:`Interrupted`.
    * A rank that another process started (a worker forked by ``trainer=ddp_cpu``'s
      launcher; a local rank > 0, started by Lightning, torchrun or srun) asks Linux for
      SIGTERM when its parent dies (``prctl(PR_SET_PDEATHSIG)``): a launcher killed by
      SIGKILL or the OOM killer, which runs no handler, still stops its workers, and they
      still save.
    * The launcher of forked workers runs no callback hooks; :meth:`relay` records its
      signal, sends SIGTERM to the workers (Lightning's ``launcher.kill``; SIGTERM also for a
      Ctrl+C, which the terminal sent them already: not a second one), waits while they save,
      then raises :class:`Interrupted` so the run exits 128+signal with the resume message.

    A rank stuck in a collective that never completes (a peer died in it, or the ranks'
    collectives differ) runs no Python handler: only the process group's timeout or SIGKILL
    ends it. Between Lightning's registration of its
    handler and ``on_train_start`` (no hook in between, a fraction of a second) Lightning's
    handler is the one in place.
    """

    path: Path | None = None  # where the stage's state is saved on a stop (none here)

    def __init__(self, stage: str):
        self.stage = stage
        self.signum = 0
        self.launcher = os.getpid()  # the process that builds the trainer
        self._trainer: L.Trainer | None = None
        self._previous: dict[int, Any] = {}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer
        forked = os.getpid() != self.launcher
        if forked or trainer.local_rank > 0:  # a rank that another process started
            _stop_with_parent()
            if forked and os.getppid() != self.launcher:  # the launcher is gone already
                self.signum = self.signum or signal.SIGTERM
        self._previous = {s: signal.getsignal(s) for s in SIGNALS}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for s in SIGNALS:  # over Lightning's SIGTERM handler, registered after `setup` (and
            signal.signal(s, self._record)  # which puts back the earlier one on an error)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _record(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT == self.signum:
            raise KeyboardInterrupt  # a second Ctrl+C: now
        if not self.signum and self._trainer is not None:
            launcher = self._trainer.strategy.launcher
            if launcher is not None:  # the ranks this process started (none in a worker)
                launcher.kill(signal.SIGTERM)
        self.signum = self.signum or signum

    def agreed(self, trainer: L.Trainer) -> int:
        """The largest signal any rank recorded (0: none): the same on every rank."""
        if trainer.world_size == 1:
            return self.signum
        mine = torch.tensor(self.signum, device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(mine, reduce_op="max"))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        signum = self.agreed(trainer)
        self.step_ended(trainer, stopping=bool(signum))
        if signum:
            raise Interrupted(signum, self.stage, trainer.global_step, self.path)

    def step_ended(self, trainer: L.Trainer, stopping: bool) -> None:
        """After every step, before a stop: what a subclass saves."""

    def relay(self, trainer: L.Trainer, fit: Callable[[], Any]) -> None:
        """Run ``fit`` in the launcher of forked workers, relaying SIGTERM and SIGINT to them."""
        self._trainer = trainer
        previous = {s: signal.signal(s, self._record) for s in SIGNALS}
        try:
            fit()
        except Exception as err:  # a worker's Interrupted reaches here as another error
            if self.signum:
                raise self.stopped() from err
            raise
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def stopped(self) -> Interrupted:
        """What a signal recorded in this process (the launcher) raises once ``fit`` ended."""
        step = checkpoint_step(self.path) if self.path is not None else None
        return Interrupted(self.signum, self.stage, step, self.path)


def _stop_with_parent() -> None:
    """Have Linux send SIGTERM to this process when its parent dies (elsewhere: nothing)."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG): {os.strerror(err)}")


class ResumeCheckpoints(StopOnSignal):
    """Save the stage's state to ``path`` every ``every_n_steps`` optimizer steps (0: never
    periodically), at the end of training, and when every rank stops on a signal
    (:class:`StopOnSignal`)."""

    def __init__(self, path: Path, every_n_steps: int, stage: str):
        super().__init__(stage)
        self.path, self.every = Path(path), every_n_steps
        self._loader_states: list[dict[str, Any]] = []

    def step_ended(self, trainer: L.Trainer, stopping: bool) -> None:
        if stopping or (self.every and trainer.global_step % self.every == 0):
            self.save(trainer)

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
        super().on_train_start(trainer, pl_module)
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
