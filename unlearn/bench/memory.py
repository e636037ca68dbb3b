"""P4: peak tensor memory of training steps per method, relative to GA in the same scope.

Every case trains the world's model (fresh weights: memory does not depend on their values)
on the same first ``method.batch_size`` items of each split the objective consumes, encoded
by the stage's collators, with AdamW over its trainable parameters. :class:`TensorMemory`
counts every tensor storage alive (weights, reference, gradients, optimiser state,
activations saved for backward, temporaries) and reports the peak: exact on CPU, where the
allocator offers no statistics. A method over target is measured again with each memory
switch: ``method.backward_per_term`` (one backward per loss term),
``method.gradient_checkpointing`` and ``trainable_modules=lora``; every ratio is to GA as
run by default in the row's scope.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from unlearn.bench.table import Row, ratio_row
from unlearn.bench.world import World
from unlearn.config import build_objective
from unlearn.data.collate import IGNORE
from unlearn.methods.mmunlearner import MMUnlearner
from unlearn.methods.saliency import trainable
from unlearn.methods.vkd import VKD
from unlearn.models.lora import prepare_trainable
from unlearn.models.reference import build_reference
from unlearn.train import stage_data

METHODS: tuple[str, ...] = ("ga", "ga_diff", "kl_min", "npo", "po", "rmu", "vgid",
                            "mmunlearner")
SCOPES: tuple[str, ...] = ("all", "lora")
OWN_SCOPE: tuple[str, ...] = ("vkd",)  # at its own scope (vision), against GA on every weight
TARGET = 1.3  # peak ÷ GA's peak in the same scope, at most
MIB = 2 ** 20


@dataclass(frozen=True)
class Switch:
    """A memory switch: its name in the table and the overrides that turn it on."""

    name: str
    overrides: tuple[str, ...]
    checkpointing: bool = False
    per_term: bool = False


NONE = Switch("default", ())
SWITCHES: tuple[Switch, ...] = (  # cheapest first: no recompute, recompute, other weights
    Switch("backward_per_term", ("method.backward_per_term=true",), per_term=True),
    Switch("gradient_checkpointing", ("method.gradient_checkpointing=true",),
           checkpointing=True),
    Switch("trainable_modules=lora", ("trainable_modules=lora",)),
)


class TensorMemory(TorchDispatchMode):
    """Bytes of distinct tensor storages alive, and their peak, while the mode is active."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[tuple[str, int], int] = {}
        self.current = self.peak = 0

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = (storage.device.type, storage.data_ptr())
        if storage.nbytes() == 0 or key in self.live:
            return
        self.live[key] = storage.nbytes()
        self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, key)

    def _free(self, key: tuple[str, int]) -> None:
        self.current -= self.live.pop(key, 0)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            if isinstance(value, torch.Tensor):
                self.track(value)
        return out


def tensors_in(*trees: Any) -> list[torch.Tensor]:
    """Every tensor in nested dicts/lists/tuples (batches, an objective's state)."""
    return [t for tree in trees for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def synthetic_masks(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """MMUnlearner masks of the right shapes, half set: the step's memory does not depend on
    which entries are set, so the Fisher passes of ``prepare`` are skipped."""
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=gen) < 0.5 for n, p in trainable(model).items()}


def positions(batch: Mapping[str, Any], prefix: str = "") -> dict[str, tuple[int, int]]:
    """(padded length, positions labelled in some sample) of each encoded batch, by split
    (a pair's views as ``forget.student`` / ``forget.teacher``): the sequence a step runs,
    as the memory planner (:mod:`unlearn.plan`) takes it."""
    if "input_ids" in batch:
        labelled = (batch["labels"][:, 1:] != IGNORE).any(0).sum()
        return {prefix.rstrip("."): (batch["input_ids"].shape[1], int(labelled))}
    out = {}
    for name, value in batch.items():
        if isinstance(value, Mapping):
            out |= positions(value, f"{prefix}{name}.")
    return out


def measure(world: World, cfg: DictConfig, steps: int, checkpointing: bool = False,
            per_term: bool = False) -> dict[str, Any]:
    """Peak memory of ``steps`` optimiser steps of ``cfg.method`` under its trainable scope."""
    model = copy.deepcopy(world.model)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    objective = build_objective(cfg)
    model, counts = prepare_trainable(model, cfg.trainable_modules)
    reference = build_reference(model, objective.needs_reference)
    if isinstance(objective, MMUnlearner):
        objective.masks = synthetic_masks(model)
    n = int(cfg.method.batch_size)
    sets = objective.train_sets(lambda name: getattr(world.bench, f"{name}_train")()[:n])
    sets = {name: objective.select(name, s) for name, s in sets.items()}
    if isinstance(objective, VKD):  # its teacher snapshot (no saliency mask: no setup needed)
        objective.prepare(model, sets, None)
    data = stage_data(world.processor, world.family, objective, sets, cfg.method,
                      seed=int(cfg.seed))
    batch = {name: data.collate[name](samples) for name, samples in sets.items()}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=float(cfg.method.optim.lr))
    tracker = TensorMemory()
    held = [*model.parameters(), *model.buffers()]
    if reference is not None:
        held += [*reference.parameters(), *reference.buffers()]
    for tensor in [*held, *tensors_in(batch, vars(objective))]:
        tracker.track(tensor)
    static = tracker.current
    model.train()
    with tracker:
        for _ in range(steps):
            optimizer.zero_grad(set_to_none=True)
            if per_term:
                for term in objective.terms(model, batch, reference):
                    term.loss.backward()
            else:
                objective(model, batch, reference).loss.backward()
            optimizer.step()
    return {"method": cfg.method.name, "scope": cfg.trainable_modules.scope,
            "reference": type(reference).__name__ if reference is not None else "-",
            "trainable": counts["trainable"], "static_mib": static / MIB,
            "peak_mib": tracker.peak / MIB, "positions": positions(batch)}


def memory_table(world: World, steps: int = 2, methods: Sequence[str] = METHODS,
                 scopes: Sequence[str] = SCOPES, own_scope: Sequence[str] = OWN_SCOPE
                 ) -> list[dict[str, Any]]:
    """Every method and scope as run by default, and with each switch when over target;
    then each of ``own_scope`` at its own default scope against GA training every weight."""
    results = []
    ga: dict[str, float] = {}
    for scope in scopes:
        for method in ("ga", *(m for m in methods if m != "ga")):
            base = [f"method={method}", f"trainable_modules={scope}"]
            result = measure(world, world.config(*base), steps) | {"switch": NONE.name}
            if method == "ga":
                ga[scope] = result["peak_mib"]
            result["ratio"] = result["peak_mib"] / ga[scope]
            results.append(result)
            if result["ratio"] <= TARGET:
                continue
            for switch in SWITCHES:
                if switch.name.startswith("trainable_modules") and scope == "lora":
                    continue
                cfg = world.config(*base, *switch.overrides)
                alt = measure(world, cfg, steps, switch.checkpointing, switch.per_term)
                results.append(alt | {"switch": switch.name, "scope": scope,
                                      "ratio": alt["peak_mib"] / ga[scope]})
    for method in own_scope if "all" in ga else ():
        result = measure(world, world.config(f"method={method}"), steps)
        results.append(result | {"switch": NONE.name, "baseline": "all",
                                 "ratio": result["peak_mib"] / ga["all"]})
    return results


def memory_rows(results: Sequence[dict[str, Any]]) -> list[Row]:
    """A row per method and scope; after an over-target one, the first switch that brings
    it within target (or, when none does, the lowest)."""
    rows = []
    ga = {r["scope"]: r["peak_mib"] for r in results if r["method"] == "ga"
          and r["switch"] == NONE.name}
    defaults = [r for r in results if r["switch"] == NONE.name and r["method"] != "ga"]
    for r in defaults:
        scope, base = r["scope"], r.get("baseline", r["scope"])
        against = "" if base == scope else f" (GA: trainable_modules={base})"
        rows.append(ratio_row(
            f"P4 {r['method']} {scope}",
            f"peak memory ÷ GA, {r['method']}, trainable_modules={scope}{against}",
            r["ratio"], "<=", TARGET, f"{r['peak_mib']:.1f} / {ga[base]:.1f} MiB",
            peak_mib=r["peak_mib"], ga_peak_mib=ga[base], reference=r["reference"]))
        if r["ratio"] <= TARGET:
            continue
        alts = [a for a in results if a["method"] == r["method"] and a["scope"] == scope
                and a["switch"] != NONE.name]
        best = next((a for a in alts if a["ratio"] <= TARGET),
                    min(alts, key=lambda a: a["ratio"], default=None))
        if best is None:
            continue
        rows.append(ratio_row(
            f"P4 {r['method']} {scope} +switch",
            f"↳ with {best['switch']}",
            best["ratio"], "<=", TARGET, f"{best['peak_mib']:.1f} / {ga[scope]:.1f} MiB",
            switch=best["switch"], peak_mib=best["peak_mib"], ga_peak_mib=ga[scope]))
    return rows
