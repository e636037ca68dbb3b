"""Hydra callbacks: refuse finished run directories before Hydra writes into them; record
failed jobs and render an experiment's report as a multirun goes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


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


class ReportOnJobEnd(Callback):
    """In a multirun, record why a job failed (``error.json``: failed or diverged, with the
    message) and, when the experiment has a ``report`` block, render the sweep's report
    (``<sweep dir>/report/``, docs/experiments.md).

    After every job rather than at the multirun's end: Hydra re-raises a failed job's error
    after the last job and then skips ``on_multirun_end``, and a stopped sweep should still
    leave a current report.
    """

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        from hydra.core.utils import JobStatus
        from hydra.types import RunMode

        if config.hydra.mode != RunMode.MULTIRUN:
            return
        if job_return.status == JobStatus.FAILED:
            self._record_failure(Path(config.hydra.runtime.output_dir), job_return._return_value)
        if config.get("report") is not None:
            from unlearn.report.render import report

            sweep = Path(config.hydra.sweep.dir)
            try:
                spec, _, out = report([sweep])
            except Exception as err:  # a report bug must not stop the sweep's next job
                log.error("report of %s failed: %s", sweep, err)
                return
            log.info("report: %s", out / f"{spec.name}.md")
            from unlearn.loggers import log_report

            try:
                log_report(config, out, spec.name)
            except Exception as err:  # W&B trouble must not stop the sweep either
                log.error("report of %s not sent to W&B: %s", sweep, err)

    @staticmethod
    def _record_failure(job_dir: Path, error: BaseException) -> None:
        from unlearn.module import DivergenceError
        from unlearn.report.runs import DIVERGED, ERROR_FILE, FAILED

        status = DIVERGED if isinstance(error, DivergenceError) else FAILED
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / ERROR_FILE).write_text(json.dumps(
            {"status": status, "type": type(error).__name__, "message": message}, indent=2)
            + "\n")


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
