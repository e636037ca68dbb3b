"""The jobs of a multirun as the report sees them: config, status, per-item scores.

A job that stopped without results is reported, never dropped: ``error.json`` (written by
:class:`unlearn.callbacks.ReportOnJobEnd` when a job raises) says failed or diverged; a job
directory with neither it nor ``metrics.json`` was stopped from outside (killed, preempted).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from unlearn.report.spec import VIEW, Cell

OK, FAILED, DIVERGED = "ok", "failed", "diverged"
ERROR_FILE = "error.json"
REPORT_DIR = "report"
MODELS = ("base", "unlearned")


def _finite(obj: Any) -> bool:
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, float):
        return math.isfinite(obj)
    return True


@dataclass
class Job:
    """One job directory of a multirun."""

    path: Path
    num: int
    config: DictConfig
    overrides: dict[str, str]
    status: str = OK
    message: str = ""
    metrics: dict = field(default_factory=dict)

    def value(self, key: str) -> str | None:
        """A row key's value in this job's config, as text (None when the key is absent)."""
        try:
            value = OmegaConf.select(self.config, key, default=None)
        except Exception:  # an interpolation that cannot resolve outside the run
            return None
        return None if value is None else str(value)

    @cached_property
    def manifest(self) -> dict:
        path = self.path / "manifest.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @cached_property
    def _scores(self) -> dict[tuple[str, str, Cell], dict[tuple, float]]:
        """(view, model, cell) -> {item key: score}, from generations.jsonl."""
        out: dict[tuple[str, str, Cell], dict[tuple, float]] = defaultdict(dict)
        seen: dict[tuple, int] = defaultdict(int)
        path = self.path / "generations.jsonl"
        if not path.exists():
            return out
        with path.open() as f:
            for line in f:
                row = json.loads(line)
                model = row.get("model")
                if model not in MODELS:
                    continue  # relearning-attack rows
                view = row.get("attack") or "clean"
                item = (row["split"], row["modality"], row["task"], str(row.get("profile_id")),
                        row.get("question"))
                occurrence = seen[(view, model, item)]
                seen[(view, model, item)] += 1
                for metric, score in row["score"].items():
                    cell = Cell(row["split"], row["modality"], metric)
                    out[(view, model, cell)][(*item, occurrence)] = float(score)
        return out

    def has(self, view: str, model: str) -> bool:
        section = self.metrics.get(view) if view != "clean" else self.metrics
        return bool(section) and model in section

    def scores(self, view: str, model: str, cell: Cell) -> dict[tuple, float]:
        return self._scores.get((view, model, cell), {})

    def metric(self, view: str, model: str, cell: Cell) -> float | None:
        """The value metrics.json records (the report's means must equal it)."""
        section = self.metrics.get(view, {}) if view != "clean" else self.metrics
        value = (section.get(model, {}).get(cell.split, {}).get(cell.modality, {})
                 .get(cell.metric))
        return None if value is None else float(value)


def _number(name: str) -> int:
    match = re.match(r"(\d+)_", name)
    return int(match.group(1)) if match else -1


def _overrides(path: Path) -> dict[str, str]:
    file = path / ".hydra" / "overrides.yaml"
    if not file.exists():
        return {}
    pairs = (str(o).split("=", 1) for o in OmegaConf.load(file))
    return {k.lstrip("+~"): v for k, v in (p for p in pairs if len(p) == 2)}


def load_job(path: Path) -> Job:
    """A job directory: its config (the resolved one the run wrote, else Hydra's) and status."""
    config_file = path / "config.yaml"
    if not config_file.exists():
        config_file = path / ".hydra" / "config.yaml"
    config = OmegaConf.load(config_file) if config_file.exists() else OmegaConf.create()
    job = Job(path, _number(path.name), config, _overrides(path))
    error = path / ERROR_FILE
    metrics = path / "metrics.json"
    if error.exists():
        info = json.loads(error.read_text())
        job.status, job.message = info.get("status", FAILED), info.get("message", "")
    elif not metrics.exists():
        job.status = FAILED
        job.message = "no metrics.json: the job stopped before writing its results"
    else:
        job.metrics = json.loads(metrics.read_text())
        if not _finite(job.metrics):
            job.status, job.message = DIVERGED, "non-finite values in metrics.json"
    return job


def job_dirs(multirun: Path) -> list[Path]:
    """The job directories of a multirun (Hydra's ``<num>_<name>``), in job order."""
    if not multirun.is_dir():
        raise FileNotFoundError(f"{multirun} is not a directory")
    dirs = [p for p in multirun.iterdir() if p.is_dir() and p.name != REPORT_DIR
            and ((p / "config.yaml").exists() or (p / ".hydra").is_dir())]
    return sorted(dirs, key=lambda p: (_number(p.name), p.name))


def load_jobs(multiruns: Iterable[Path]) -> list[Job]:
    """Every job of the given multirun directories, in order (several directories: one table
    from sweeps that Hydra's grid cannot express as one)."""
    return [load_job(p) for d in multiruns for p in job_dirs(Path(d))]


def row_value(job: Job, key: str, view: str) -> str | None:
    return view if key == VIEW else job.value(key)
