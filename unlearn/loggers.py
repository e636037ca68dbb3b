"""Lightning loggers from the ``logger`` group. W&B falls back to offline without network.

A finished run hands its results to :func:`log_results`: W&B receives them (docs/wandb.md);
the CSV logger keeps only the training curves (the run directory holds the results).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import os
import socket
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import chain, zip_longest
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from unlearn.utils import plain

log = logging.getLogger(__name__)

# what each W&B tag names: (tag prefix, config key); the dashboard filters on these
TAGS: tuple[tuple[str, str], ...] = (
    ("model", "model.name"), ("method", "method.name"), ("forget", "forget_ratio"),
    ("perturbation", "perturbation.name"), ("prompt", "prompt_style.name"),
    ("scope", "trainable_modules.scope"),
)
GENERATION_COLUMNS = ("split", "modality", "task", "profile_id", "question", "truth",
                      "base answer", "unlearned answer")


def route_lightning_logs() -> None:
    """Let Lightning's messages reach the console once, through the root (Hydra's) handlers.

    The ``lightning`` package logger brings its own stream handler and also propagates to
    the root, so under Hydra every Lightning line was printed twice; without it the lines
    keep Hydra's format and also reach the job's log file.
    """
    if logging.getLogger().handlers:
        logging.getLogger("lightning").handlers.clear()


def wandb_reachable(host: str = "api.wandb.ai", timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_tags(cfg: DictConfig) -> list[str]:
    """``prefix:value`` for each of :data:`TAGS` the config carries."""
    values = ((prefix, OmegaConf.select(cfg, key)) for prefix, key in TAGS)
    return [f"{prefix}:{value}" for prefix, value in values if value is not None]


def wandb_group(cfg: DictConfig) -> str:
    """The experiment a run belongs to: ``logger.group`` (``experiment_name`` by default),
    else the ``+experiment=NAME`` choice of a Hydra run, else ``default``."""
    group = cfg.logger.get("group")
    if group:
        return str(group)
    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get("experiment") or "default")
    return "default"


def wandb_mode(cfg: DictConfig) -> str:
    """``logger.mode``, with ``auto`` resolved: online when W&B is reachable and
    ``WANDB_MODE`` does not say offline, else offline."""
    mode = str(cfg.logger.get("mode", "auto"))
    if mode != "auto":
        return mode
    online = os.environ.get("WANDB_MODE") != "offline" and wandb_reachable()
    return "online" if online else "offline"


def build_logger(cfg: DictConfig, run_dir: Path) -> Any:
    name = cfg.logger.name
    if name == "none":
        return False
    if name == "csv":
        return CSVLogger(save_dir=str(run_dir), name="logs", version="")
    import wandb
    if wandb.run is not None:  # a failed earlier job of this multirun left its run open
        wandb.run.finish(exit_code=1)
    mode = wandb_mode(cfg)
    if mode == "offline" and cfg.logger.get("mode", "auto") == "auto":
        log.warning("W&B unreachable: logging offline to %s (sync later with `wandb sync`)",
                    run_dir)
    return WandbLogger(project=cfg.logger.project, entity=cfg.logger.get("entity"),
                       group=wandb_group(cfg), job_type=cfg.method.name, name=cfg.run_name,
                       tags=wandb_tags(cfg), config=plain(cfg), save_dir=str(run_dir),
                       offline=mode == "offline")


def log_results(logger: Any, results: Mapping, records: Sequence[Mapping],
                manifest: Mapping, run_dir: Path, samples: int = 100) -> None:
    """A finished run's results to W&B, then close its run (the next job of a multirun
    opens its own): metrics.json as flat summary keys, its per-split table, ``samples``
    paired generations, the manifest as config and any PNG in ``run_dir``.

    Other loggers are left as they are: the run directory already holds the results.
    """
    if not isinstance(logger, WandbLogger):
        return
    import wandb
    run = logger.experiment
    run.config.update({"manifest": dict(manifest)}, allow_val_change=True)
    run.summary.update(summary_metrics(results))
    rows = split_rows(results)
    tables = {"results/splits": wandb.Table(columns=list(rows[0]),
                                            data=[list(r.values()) for r in rows])}
    if samples:
        tables["results/generations"] = wandb.Table(
            columns=list(GENERATION_COLUMNS), data=generation_rows(records, samples))
    run.log(tables)
    log_images(run, sorted(run_dir.glob("*.png")))
    run.finish()


def log_report(cfg: DictConfig, out: Path, name: str) -> None:
    """An experiment's report (``out``: its tables and PNGs) to W&B when the sweep logs there:
    one run per sweep (``job_type`` report, in the experiment's group) that every rendering
    updates, with the figures as images and the CSV as a table."""
    if cfg.logger.name != "wandb":
        return
    import wandb
    mode = wandb_mode(cfg)
    run_id = "report-" + hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:12]
    run = wandb.init(project=cfg.logger.project, entity=cfg.logger.get("entity"),
                     group=wandb_group(cfg), job_type="report", name=f"{name} report",
                     id=run_id, resume="allow", dir=str(out), mode=mode, reinit=True)
    csv_file = out / f"{name}.csv"
    if csv_file.is_file():
        with csv_file.open(newline="") as f:
            header, *rows = list(csv.reader(f))
        run.log({"report/table": wandb.Table(columns=header, data=rows)})
    log_images(run, sorted(out.glob("*.png")))
    run.finish()


def log_images(run: Any, paths: Iterable[Path]) -> None:
    """Each PNG as ``report/<file stem>`` (the report's figures: in the run's Media panels)."""
    import wandb
    images = {f"report/{Path(p).stem}": wandb.Image(str(p)) for p in paths}
    if images:
        run.log(images)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def _leaves(node: Mapping, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, float]]:
    for key, value in node.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping):
            yield from _leaves(value, path)
        elif _is_number(value):
            yield "/".join(path), value


def summary_metrics(results: Mapping) -> dict[str, float]:
    """Every number of metrics.json at its path joined by ``/``
    (``unlearned/forget/image_text/class_acc``), and for every ``…/unlearned/…`` key with a
    ``…/base/…`` twin the change ``…/delta/…`` = unlearned - base."""
    flat = dict(_leaves(results))
    deltas = {}
    for key, value in flat.items():
        parts = key.split("/")
        for i, part in enumerate(parts):
            base = "/".join([*parts[:i], "base", *parts[i + 1:]])
            if part == "unlearned" and base in flat:
                deltas["/".join([*parts[:i], "delta", *parts[i + 1:]])] = value - flat[base]
    return flat | deltas


def _is_metrics(node: object) -> bool:
    """A ``split -> modality -> {metric: number}`` node of metrics.json (one evaluation)."""
    return isinstance(node, Mapping) and bool(node) and all(
        isinstance(by_mod, Mapping) and by_mod and all(
            isinstance(values, Mapping) and values and all(map(_is_number, values.values()))
            for values in by_mod.values())
        for by_mod in node.values())


def _evaluations(node: Mapping, prefix: str = "") -> Iterator[tuple[str, Mapping]]:
    for key, value in node.items():
        stage = f"{prefix}{key}"
        if _is_metrics(value):
            yield stage, value
        elif isinstance(value, Mapping):
            yield from _evaluations(value, f"{stage}/")


def split_rows(results: Mapping) -> list[dict[str, Any]]:
    """One row per evaluation (``stage``: its path in metrics.json) x split x modality, a
    column per metric (None where an evaluation lacks it)."""
    evaluations = list(_evaluations(results))
    metrics = list(dict.fromkeys(m for _, ev in evaluations for by_mod in ev.values()
                                 for values in by_mod.values() for m in values))
    return [{"stage": stage, "split": split, "modality": modality,
             **{m: values.get(m) for m in metrics}}
            for stage, ev in evaluations for split, by_mod in ev.items()
            for modality, values in by_mod.items()]


def generation_rows(records: Sequence[Mapping], samples: int) -> list[list[Any]]:
    """``samples`` clean-view questions with the base and the unlearned model's answers,
    taken in turn from each split x modality x task (in file order) so that every one shows;
    the unlearned answer is None for a run that evaluated only the base model."""
    def key(r: Mapping, n: int) -> tuple:
        return r["split"], r["modality"], r["task"], r.get("profile_id"), r["question"], n

    def keyed(model: str) -> Iterator[tuple[tuple, Mapping]]:
        seen: dict[tuple, int] = {}
        for r in records:
            if r.get("model") == model and "attack" not in r:
                k = key(r, 0)
                seen[k] = seen.get(k, -1) + 1
                yield key(r, seen[k]), r

    unlearned = {k: r["prediction"] for k, r in keyed("unlearned")}
    groups: dict[tuple, list] = {}
    for k, r in keyed("base"):
        groups.setdefault(k[:3], []).append((k, r))
    turns = chain.from_iterable(zip_longest(*groups.values()))
    picked = [pair for pair in turns if pair is not None][:samples]
    return [[r["split"], r["modality"], r["task"], r.get("profile_id"), r["question"],
             r["truth"], r["prediction"], unlearned.get(k)] for k, r in picked]
