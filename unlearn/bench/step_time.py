"""P1: a training step through the framework vs a hand-written PyTorch loop.

The framework side is :func:`unlearn.train.fit` as a pipeline run calls it (``UnlearnModule``
in a Lightning ``Trainer`` from the ``trainer`` config, CSV logger, progress bar); the bare side
is :func:`bare_fit`: AdamW, zero_grad, the objective's loss, backward, the trainer's gradient
clipping, step, the module's LR schedule. Both draw the same batches from the same plain
DataLoaders (:meth:`UnlearnDataModule.loaders`), so they train identically
(``tests/test_bench.py``) and only the loop around the objective differs. A step's time is
the wall time between the ends of consecutive steps: collation, forward, backward, optimiser
and every hook or log call in between; the first steps of each run are not counted.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset

from unlearn.bench.table import Row, ratio_row
from unlearn.bench.world import World, interleaved, load_world, median, pooled, round_ratios
from unlearn.config import build_objective
from unlearn.data.schema import Sample
from unlearn.loggers import build_logger
from unlearn.methods.base import Objective
from unlearn.methods.vkd import VKD
from unlearn.models.lora import prepare_trainable
from unlearn.models.reference import build_reference
from unlearn.module import lr_lambda
from unlearn.train import fit, stage_data
from unlearn.utils import plain

METHODS: tuple[str, ...] = ("ga", "npo", "vgid")  # plain, frozen reference, teacher view
TARGET = 1.10  # framework step time ÷ bare step time, at most


@dataclass(frozen=True)
class StepModel:
    """A model the comparison runs on: world overrides, batch size, steps per run."""

    label: str
    overrides: tuple[str, ...]
    batch_size: int | None  # None: the method's own
    steps: int
    skip: int = 1  # step intervals not counted at the start of each run


MODELS: tuple[StepModel, ...] = (
    StepModel("tiny_llava", (), None, steps=16),
    # compute-bound steps, ~1 s each on one CPU core: few and small; the warm-up round has
    # already touched everything, so from the second step on every step counts
    StepModel("bench_65m", ("model.tiny.size=bench_65m",), 2, steps=5, skip=0),
)


def trainer_config(cfg: DictConfig, max_steps: int) -> DictConfig:
    """The run's ``trainer`` node, stopped after ``max_steps`` optimiser steps."""
    if cfg.trainer.accelerator != "cpu":
        raise ValueError("the step-time bench compares on CPU (trainer=cpu): the bare loop "
                         "does not move data to a device")
    return OmegaConf.create({**plain(cfg.trainer), "max_steps": int(max_steps)})


def bare_fit(model: torch.nn.Module, processor: Any, family: str, objective: Objective,
             splits: Mapping[str, Sequence[Sample] | Dataset], stage_cfg: DictConfig,
             trainer_cfg: DictConfig, *, seed: int, reference: torch.nn.Module | None = None,
             max_steps: int | None = None, on_step: Callable[[], None] | None = None
             ) -> list[float]:
    """What :func:`unlearn.train.fit` trains, as a plain PyTorch loop; returns the losses.

    Same batches (the stage's DataLoaders), AdamW and LR schedule of
    ``UnlearnModule.configure_optimizers``, norm clipping at ``gradient_clip_val``. Only
    automatic optimisation (one backward per batch) and no gradient checkpointing.
    """
    if objective.multi_step or stage_cfg.get("backward_per_term") \
            or stage_cfg.get("gradient_checkpointing"):
        raise ValueError("bare_fit makes one backward per batch without checkpointing")
    loaders = stage_data(processor, family, objective, splits, stage_cfg, seed=seed).loaders()
    epochs = int(stage_cfg.epochs)
    total = epochs * len(next(iter(loaders.values())))
    total = min(total, max_steps) if max_steps is not None else total
    optim = plain(stage_cfg.optim)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(optim["lr"]),
                                  weight_decay=float(optim.get("weight_decay", 0.0)),
                                  betas=tuple(optim.get("betas", (0.9, 0.999))))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(
        optim.get("schedule", "linear"), int(optim.get("warmup_steps", 0)), total,
        float(optim.get("decay_fraction", 0.2))))
    clip = trainer_cfg.get("gradient_clip_val")
    if reference is not None:
        reference.eval().requires_grad_(False)
    losses: list[float] = []
    model.train()
    for _ in range(epochs):
        for batches in zip(*loaders.values(), strict=True):
            if len(losses) == total:
                break
            batch = dict(zip(loaders, batches, strict=True))
            optimizer.zero_grad(set_to_none=True)
            loss = objective(model, batch, reference).loss
            loss.backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(params, float(clip))
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            if on_step is not None:
                on_step()
    model.eval()
    return losses


class StepClock(L.Callback):
    """Wall-clock time at the end of every training batch (after Lightning's own hooks)."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self.times.append(time.perf_counter())


def intervals(times: Sequence[float], skip: int) -> list[float]:
    """Step times from the ends of consecutive steps, the first ``skip`` dropped."""
    return [b - a for a, b in zip(times[:-1], times[1:], strict=True)][skip:]


@dataclass
class Trial:
    """One side's fresh copy of everything a run trains: model, objective, reference, data."""

    model: torch.nn.Module
    objective: Objective
    reference: torch.nn.Module | None
    sets: dict[str, list[Sample]]


def trial(world: World, cfg: DictConfig) -> Trial:
    """A fresh student, objective and reference from the world's model, as a pipeline run
    builds them (``method.reference.source: initial``)."""
    objective = build_objective(cfg)
    model, _ = prepare_trainable(copy.deepcopy(world.model), cfg.trainable_modules)
    reference = build_reference(model, objective.needs_reference)
    sets = objective.train_sets(lambda name: getattr(world.bench, f"{name}_train")())
    sets = {name: objective.select(name, s) for name, s in sets.items()}
    if isinstance(objective, VKD):  # its teacher snapshot (no saliency mask: no setup needed)
        objective.prepare(model, sets, None)
    return Trial(model, objective, reference, sets)


def framework_steps(world: World, cfg: DictConfig, steps: int, skip: int) -> list[float]:
    """Step times of ``steps`` steps through :func:`unlearn.train.fit`."""
    t = trial(world, cfg)
    clock = StepClock()
    with tempfile.TemporaryDirectory() as tmp:
        fit(t.model, world.processor, world.family, t.objective, t.sets, cfg.method,
            trainer_config(cfg, steps), seed=int(cfg.seed), logger=build_logger(cfg, Path(tmp)),
            reference=t.reference, callbacks=[clock])
    return intervals(clock.times, skip)


def bare_steps(world: World, cfg: DictConfig, steps: int, skip: int) -> list[float]:
    """Step times of ``steps`` steps through :func:`bare_fit`."""
    t = trial(world, cfg)
    times: list[float] = []
    bare_fit(t.model, world.processor, world.family, t.objective, t.sets, cfg.method,
             trainer_config(cfg, steps), seed=int(cfg.seed), reference=t.reference,
             max_steps=steps, on_step=lambda: times.append(time.perf_counter()))
    return intervals(times, skip)


def compare(world: World, cfg: DictConfig, spec: StepModel, repeats: int
            ) -> dict[str, list[list[float]]]:
    """Step times of both sides per round, interleaved run by run."""
    return interleaved({
        "framework": lambda: framework_steps(world, cfg, spec.steps, spec.skip),
        "bare": lambda: bare_steps(world, cfg, spec.steps, spec.skip),
    }, repeats)


def step_time_rows(overrides: Sequence[str], repeats: int,
                   models: Sequence[StepModel] = MODELS,
                   methods: Sequence[str] = METHODS) -> list[Row]:
    """One row per model and method: median framework ÷ median bare step time."""
    rows = []
    for spec in models:
        world = load_world([*overrides, *spec.overrides])
        size = f"{world.parameters() / 1e6:.1f}M"
        for method in methods:
            more = [f"method={method}"]
            if spec.batch_size:
                more.append(f"method.batch_size={spec.batch_size}")
            cfg = world.config(*more)
            rounds = compare(world, cfg, spec, repeats)
            per_round = round_ratios(rounds["framework"], rounds["bare"])
            fw, bare = (median(pooled(rounds[side])) * 1e3 for side in ("framework", "bare"))
            rows.append(ratio_row(
                f"P1 {method} {spec.label}",
                f"step time, Lightning ÷ bare loop, {method} ({size}, batch "
                f"{cfg.method.batch_size})",
                fw / bare, "<=", TARGET,
                f"{fw:.0f} / {bare:.0f} ms; rounds {min(per_round):.2f}–{max(per_round):.2f}",
                framework_ms=fw, bare_ms=bare, round_ratios=per_round,
                samples_ms={side: [[round(v * 1e3, 1) for v in values] for values in r]
                            for side, r in rounds.items()},
                parameters=world.parameters(), batch_size=int(cfg.method.batch_size)))
    return rows


# methods compared with GA training every weight, each at its own default scope
OWN_SCOPE: tuple[str, ...] = ("vkd",)


def own_scope_rows(overrides: Sequence[str], repeats: int,
                   methods: Sequence[str] = OWN_SCOPE) -> list[Row]:
    """Step time of a method at its own scope (VKD: vision tower + projector) ÷ GA with
    ``trainable_modules=all``, both through the framework on the tiny model, interleaved."""
    spec, world = MODELS[0], load_world(overrides)
    ga = world.config("method=ga", "trainable_modules=all")
    rows = []
    for method in methods:
        cfg = world.config(f"method={method}")
        rounds = interleaved({
            method: lambda cfg=cfg: framework_steps(world, cfg, spec.steps, spec.skip),
            "ga": lambda: framework_steps(world, ga, spec.steps, spec.skip)}, repeats)
        own, base = (median(pooled(rounds[side])) * 1e3 for side in (method, "ga"))
        rows.append(ratio_row(
            f"P1 {method} vs ga",
            f"step time, {method} (trainable_modules={cfg.trainable_modules.scope}) ÷ GA "
            "(all)", own / base, "<=", 1.0, f"{own:.0f} / {base:.0f} ms",
            method_ms=own, ga_ms=base))
    return rows
