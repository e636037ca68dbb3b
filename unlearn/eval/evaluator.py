"""MLLMU-Bench evaluation: every split, image+text and text-only, three task formats."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.progress import Progress

from unlearn.data.collate import CLEAN, View
from unlearn.data.prompts import build_prompt
from unlearn.data.schema import MODALITIES, Sample
from unlearn.eval.generate import generate
from unlearn.eval.metrics import aggregate, score

EVAL_TASKS: tuple[str, ...] = ("classification", "cloze", "generation")


def evaluate(model: Any, processor: Any, family: str, splits: Mapping[str, Sequence[Sample]],
             *, max_new_tokens: Mapping[str, int], batch_size: int = 32,
             letter_parser: str = "official", view: View = CLEAN,
             ) -> tuple[dict[str, dict[str, dict[str, float]]], list[dict]]:
    """Metrics ``{split: {modality: {metric: value}}}`` and one record per question.

    Each task is generated across all splits in one length-sorted pass, so batches are full.
    """
    records: list[dict] = []
    with Progress(transient=True) as progress:
        for task in EVAL_TASKS:
            items = [s for samples in splits.values() for s in samples if s.task == task]
            if not items:
                continue
            preds = generate(model, processor, family, items, view=view,
                             max_new_tokens=int(max_new_tokens[task]), batch_size=batch_size,
                             progress=progress, description=f"eval {task}")
            for s, pred in zip(items, preds, strict=True):
                records.append({
                    "split": s.split, "modality": s.modality, "task": task,
                    "profile_id": s.profile_id, "question": s.question, "options": s.options,
                    "prompt": build_prompt(s, family, processor, instruction=view.instruction,
                                           suffix=view.suffix),
                    "prediction": pred, "truth": s.answer,
                    "score": score(task, pred, s.answer, s.options, letter_parser),
                })
    metrics = {
        split: {
            mod: aggregate(r["score"] for r in records
                           if r["split"] == split and r["modality"] == mod)
            for mod in MODALITIES
        }
        for split in splits
    }
    return metrics, records
