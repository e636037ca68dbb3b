"""Relearning attack (``eval.attack=relearn``): does the unlearned knowledge come back?

A copy of the evaluated model is fine-tuned for a few steps on the fine-tuning items
(``ft_Data``) of some forget people (the *relearn* people); the questions about the *other*
forget people (the *held-out* people) are scored before and after. People, not questions, are
held out: every question of the evaluation and every fine-tuning item belongs to one person
(the ``ID`` column), so disjoint people give a relearning set and an evaluated set that share
no question and no fact. The accuracy gain AG = after - before per metric, and its mean over
the accuracy metrics, measure how much knowledge the unlearning only hid. The same steps on
the never-trained counterpart (the model before the vanilla stage) give the gain of a model
that never knew the people. Design, split and defaults: ``docs/relearn.md``.
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf

from unlearn.data.collate import Collator
from unlearn.data.schema import Sample
from unlearn.errors import UserError
from unlearn.eval.generate import to_device
from unlearn.methods.gradient import FineTune
from unlearn.methods.losses import aligned_logprobs, label_logits
from unlearn.models.lora import merge_adapters, prepare_trainable
from unlearn.train import fit
from unlearn.utils import plain

log = logging.getLogger(__name__)

# the metrics that are accuracies: their gains are averaged into one AG
ACCURACY_METRICS: tuple[str, ...] = ("class_acc", "cloze_acc", "choice_acc")

Metrics = dict[str, dict[str, dict[str, float]]]
# (model, processor, splits) -> (metrics, records): the run's evaluation under its view
Evaluate = Callable[[Any, Any, Mapping[str, Sequence[Sample]]], tuple[Metrics, list[dict]]]


@dataclass(frozen=True)
class PeopleSplit:
    """The forget people, split: the attacker relearns on ``relearn``, we score ``heldout``."""

    relearn: tuple[str, ...]
    heldout: tuple[str, ...]


def split_people(forget_ids: Sequence[str], fraction: float, seed: int) -> PeopleSplit:
    """``round(fraction * n)`` of the ``n`` forget people relearned (at least one, and at least
    one held out), drawn with ``seed``; both parts sorted."""
    ids = sorted(set(forget_ids))
    n = len(ids)
    if n < 2:
        raise UserError(f"eval.attack=relearn needs at least 2 forget people (one to relearn, "
                        f"one to score); this forget split has {n}: use a larger forget_ratio")
    k = min(n - 1, max(1, int(n * fraction + 0.5)))
    random.Random(f"{seed}-relearn").shuffle(ids)
    return PeopleSplit(tuple(sorted(ids[:k])), tuple(sorted(ids[k:])))


def relearn_items(forget_train: Sequence[Sample], people: PeopleSplit) -> list[Sample]:
    """Every fine-tuning item of the relearn people."""
    keep = set(people.relearn)
    return [s for s in forget_train if s.profile_id in keep]


def heldout_splits(splits: Mapping[str, Sequence[Sample]], people: PeopleSplit
                   ) -> dict[str, list[Sample]]:
    """The evaluation questions about the held-out people, in every split that asks about
    them (MLLMU-Bench: forget and test; CLEAR: forget)."""
    keep = set(people.heldout)
    kept = {name: [s for s in samples if s.profile_id in keep] for name, samples in splits.items()}
    return {name: samples for name, samples in kept.items() if samples}


def check_disjoint(items: Sequence[Sample], evaluated: Mapping[str, Sequence[Sample]]) -> None:
    """Refuse a relearning set that shares a person, or a question about a person, with the
    evaluated questions (held-out people make both impossible; this checks it per run)."""
    scored = [s for samples in evaluated.values() for s in samples]
    shared = {s.profile_id for s in items} & {s.profile_id for s in scored}
    shared_q = {(s.profile_id, s.question) for s in items} & {(s.profile_id, s.question)
                                                              for s in scored}
    if shared or shared_q:
        raise RuntimeError(f"relearning set and evaluated questions share people {sorted(shared)}"
                           f" and {len(shared_q)} questions")


def accuracy_gain(before: Metrics, after: Metrics) -> tuple[Metrics, float | None]:
    """AG per ``split / modality / metric`` (after - before, every metric both carry) and the
    mean of the :data:`ACCURACY_METRICS` gains over every split and modality (None if none)."""
    gain = {
        split: {mod: {m: after[split][mod][m] - v for m, v in values.items()
                      if m in after.get(split, {}).get(mod, {})}
                for mod, values in by_mod.items()}
        for split, by_mod in before.items()
    }
    acc = [g[m] for by_mod in gain.values() for g in by_mod.values()
           for m in ACCURACY_METRICS if m in g]
    return gain, (sum(acc) / len(acc) if acc else None)


@torch.no_grad()
def mean_nll(model: Any, processor: Any, family: str, items: Sequence[Sample], *,
             loss_scope: str = "answer", batch_size: int = 32) -> float:
    """Token-mean NLL of ``items`` (the labelled tokens of all of them), in eval mode."""
    collate = Collator(processor, family, loss_scope=loss_scope)
    total, tokens = 0.0, 0
    was_training = model.training
    model.eval()
    for start in range(0, len(items), batch_size):
        batch = to_device(collate(items[start:start + batch_size]), model)
        logp, mask = aligned_logprobs(*label_logits(model, batch))
        total += float(-(logp * mask).sum())
        tokens += int(mask.sum())
    model.train(was_training)
    return total / max(tokens, 1)


def stage_config(relearn: DictConfig) -> DictConfig:
    """``eval.relearn`` as a stage for :func:`unlearn.train.fit` (epochs bound the steps)."""
    return OmegaConf.create({
        "epochs": int(relearn.steps), "batch_size": int(relearn.batch_size),
        "loss_scope": relearn.loss_scope, "optim": plain(relearn.optim)})


def trainer_config(trainer: DictConfig, steps: int) -> DictConfig:
    """The run's trainer, in one process (relearning runs on rank 0 after unlearning), stopped
    after ``steps`` optimizer steps."""
    kwargs = plain(trainer)
    kwargs.update(devices=1, strategy="auto", num_nodes=1, max_steps=int(steps))
    return OmegaConf.create(kwargs)


def relearn(cfg: DictConfig, model: Any, processor: Any, items: Sequence[Sample]
            ) -> tuple[Any, dict[str, float]]:
    """Fine-tune ``model`` in place (a copy the caller made) on ``items`` with ``eval.relearn``;
    returns it (adapters merged) and the NLL of ``items`` before and after."""
    r, family = cfg.eval.relearn, cfg.model.family
    scope = {"scope": r.trainable, "lora": plain(cfg.trainable_modules.get("lora") or {})}
    nll = {"before": mean_nll(model, processor, family, items, loss_scope=r.loss_scope,
                              batch_size=int(cfg.eval.batch_size))}
    model, _ = prepare_trainable(model, scope)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)  # same order for every model
    fit(model, processor, family, FineTune(r.reduction), {"train": list(items)}, stage_config(r),
        trainer_config(cfg.trainer, int(r.steps)), seed=int(cfg.seed), label="relearning attack")
    model = merge_adapters(model)
    model.requires_grad_(False)
    nll["after"] = mean_nll(model, processor, family, items, loss_scope=r.loss_scope,
                            batch_size=int(cfg.eval.batch_size))
    return model, nll


def _attack(cfg: DictConfig, model: Any, processor: Any, items: Sequence[Sample],
            evaluated: Mapping[str, Sequence[Sample]], evaluate: Evaluate, name: str
            ) -> tuple[dict[str, Any], list[dict], dict[str, float]]:
    """Score ``model`` on ``evaluated``, relearn a copy, score it again: metrics.json's entry,
    the generation records (``model`` = ``name`` / ``name``_relearned) and the NLLs."""
    before, records = evaluate(model, processor, evaluated)
    rows = [dict(r, model=name, attack="relearn") for r in records]
    relearned, nll = relearn(cfg, copy.deepcopy(model), processor, items)
    after, records = evaluate(relearned, processor, evaluated)
    del relearned
    rows += [dict(r, model=f"{name}_relearned", attack="relearn") for r in records]
    gain, average = accuracy_gain(before, after)
    return {"before": before, "after": after, "gain": gain, "average_gain": average}, rows, nll


def relearn_attack(cfg: DictConfig, model: Any, processor: Any, bench: Any,
                   splits: Mapping[str, Sequence[Sample]], evaluate: Evaluate,
                   never_trained: Callable[[], tuple[Any, Any]] | None = None
                   ) -> tuple[dict[str, Any], list[dict], dict[str, Any]]:
    """The attack on ``model`` (the evaluated, unlearned one; left unchanged) and, with
    ``never_trained`` (a loader of the model before the vanilla stage), on that control.

    Returns metrics.json's ``relearn`` entry (``before``, ``after``, ``gain``, ``average_gain``
    and ``control`` with the same keys), the generation records and the manifest entry.
    """
    r = cfg.eval.relearn
    people = split_people(bench.forget_ids, float(r.fraction), int(cfg.seed))
    items = relearn_items(bench.train_set("forget"), people)
    evaluated = heldout_splits(splits, people)
    check_disjoint(items, evaluated)
    log.info("relearning attack: %d items of %d forget people, %d steps; scoring %d others",
             len(items), len(people.relearn), r.steps, len(people.heldout))
    result, rows, nll = _attack(cfg, model, processor, items, evaluated, evaluate, "unlearned")
    manifest: dict[str, Any] = {
        "relearn_ids": list(people.relearn), "heldout_ids": list(people.heldout),
        "items": len(items), "steps": int(r.steps),
        "sequences": int(r.steps) * int(r.batch_size),
        "evaluated": {name: len(s) for name, s in evaluated.items()}, "nll": nll}
    if never_trained is not None:
        control, control_processor = never_trained()
        result["control"], control_rows, control_nll = _attack(
            cfg, control, control_processor, items, evaluated, evaluate, "never_trained")
        rows += control_rows
        manifest["control_nll"] = control_nll
    return result, rows, manifest
