"""Generation-based evaluation of any benchmark: every split, image+text and text-only, each
task scored by the metrics its ``eval`` config names (MLLMU-Bench: classification, cloze,
generation; CLEAR: name choice, QA)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from rich.progress import Progress

from unlearn.data.collate import CLEAN, View
from unlearn.data.prompts import build_prompt
from unlearn.data.schema import MODALITIES, Sample
from unlearn.eval.generate import generate
from unlearn.eval.likelihood_items import add_likelihood
from unlearn.eval.metrics import TASK_METRICS, aggregate, score

EVAL_TASKS: tuple[str, ...] = tuple(TASK_METRICS)  # MLLMU-Bench's


def with_few_shot(samples: Sequence[Sample], task: str, n_ids: int, rng: random.Random
                  ) -> list[Sample]:
    """The ``task`` questions with few-shot examples attached, as the official eval.py does.

    ``n_ids`` profiles of the split become the shots (all their ``task`` questions of the same
    modality); their own questions are then not scored.
    """
    items = [s for s in samples if s.task == task]
    ids = sorted({s.profile_id for s in items})
    shot_ids = set(rng.sample(ids, min(n_ids, len(ids) - 1)))
    out = []
    for s in items:
        if s.profile_id in shot_ids:
            continue
        shots = [x for x in items if x.profile_id in shot_ids and x.modality == s.modality]
        out.append(replace(s, meta={**s.meta, "shots": shots}))
    return out


def few_shot_splits(splits: Mapping[str, Sequence[Sample]], shot_ids: Mapping[str, int],
                    seed: int = 0, skip: Mapping[str, Sequence[str]] | None = None
                    ) -> dict[str, list[Sample]]:
    """Every split with few-shot prompts for the tasks in ``shot_ids`` (task -> profile count),
    except the splits ``skip[task]`` lists (MLLMU's eval.py: no classification shots on the
    celebrity split)."""
    rng = random.Random(seed)
    skip = skip or {}
    out = {}
    for split, samples in splits.items():
        items = [s for s in samples if s.task not in shot_ids]
        for task, n_ids in shot_ids.items():
            if split in skip.get(task, ()):
                items += [s for s in samples if s.task == task]
            else:
                items += with_few_shot(samples, task, int(n_ids), rng)
        out[split] = items
    return out


def evaluate(model: Any, processor: Any, family: str, splits: Mapping[str, Sequence[Sample]],
             *, max_new_tokens: Mapping[str, int], batch_size: int = 32,
             letter_parser: str = "official", view: View = CLEAN,
             metrics: Mapping[str, Sequence[str]] = TASK_METRICS,
             likelihood: bool = False, forget_split: str = "forget",
             ) -> tuple[dict[str, dict[str, dict[str, float]]], list[dict]]:
    """Metrics ``{split: {modality: {metric: value}}}`` and one record per question.

    ``metrics`` maps each evaluated task to its metric names (default: MLLMU-Bench's); items
    of other tasks are not evaluated. Each task is generated across all splits in one
    length-sorted pass, so batches are full. ``likelihood``: also the likelihood metrics of
    the items that have them (:mod:`unlearn.eval.likelihood_items`; truth ratios are
    folded the forget way on ``forget_split``).
    """
    records: list[dict] = []
    with Progress(transient=True) as progress:
        for task, names in metrics.items():
            items = [s for samples in splits.values() for s in samples if s.task == task]
            if not items:
                continue
            preds = generate(model, processor, family, items, view=view,
                             max_new_tokens=int(max_new_tokens[task]), batch_size=batch_size,
                             progress=progress, description=f"eval {task}")
            task_records = []
            for s, pred in zip(items, preds, strict=True):
                task_records.append({
                    "split": s.split, "modality": s.modality, "task": task,
                    "profile_id": s.profile_id, "question": s.question, "options": s.options,
                    "prompt": build_prompt(s, family, processor, instruction=view.instruction,
                                           suffix=view.suffix),
                    "prediction": pred, "truth": s.answer,
                    "score": score(task, pred, s.answer, s.options, letter_parser,
                                   metrics=names),
                })
            if likelihood:
                add_likelihood(model, processor, family, items, task_records, task,
                               forget_split=forget_split, batch_size=batch_size, view=view,
                               progress=progress)
            records += task_records
    values = {
        split: {
            mod: aggregate(r["score"] for r in records
                           if r["split"] == split and r["modality"] == mod)
            for mod in MODALITIES
        }
        for split in splits
    }
    return values, records
