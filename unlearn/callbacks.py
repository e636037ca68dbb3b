"""Hydra callbacks that must act before Hydra itself writes into a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class RefuseFinishedRunDirs(Callback):
    """Refuse a run (or sweep) directory that holds results before Hydra writes its
    ``.hydra/`` files into it, so a finished run's recorded overrides always match its results.

    Hydra turns a callback's exceptions into warnings and goes on, so the refusal ends the
    process itself (exit status 1, one line).
    """

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        done = Path(config.hydra.run.dir) / "metrics.json"
        if done.exists():
            raise SystemExit(f"error: {done.parent} already holds metrics.json; results are "
                             "never overwritten: choose another hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        done = sorted(sweep.glob("*/metrics.json")) if sweep.is_dir() else []
        if done:
            raise SystemExit(f"error: {sweep} already holds the results of {len(done)} job(s) "
                             f"(e.g. {done[0].parent.name}); results are never overwritten: "
                             "choose another hydra.sweep.dir")


class CheckSlurmSweep(Callback):
    """Check a ``hydra/launcher=slurm`` sweep before it is submitted (:mod:`unlearn.launcher`):
    a value Slurm or Lightning would refuse stops it here with one line, not in the queue."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from unlearn.launcher import is_slurm

        if is_slurm(config):
            raise SystemExit("error: hydra/launcher=slurm submits a sweep: add --multirun (-m); "
                             "without it this run would start here, on this machine")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from unlearn.config import ConfigError
        from unlearn.launcher import check_slurm, is_slurm

        if is_slurm(config):
            try:
                check_slurm(config)
            except ConfigError as err:
                raise SystemExit(f"error: {err}") from None
