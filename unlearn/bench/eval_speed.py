"""P2: the batched evaluator vs MLLMU-Bench's loop, which generates one sample at a time.

:func:`evaluate_one_at_a_time` is that loop, written out: each question encoded on its own
with the project's prompt building (:func:`unlearn.data.collate.encode`), one greedy
``generate`` of the task's ``max_new_tokens``, the new tokens decoded and scored by the
project's metrics. Only the batching differs from :func:`unlearn.eval.evaluator.evaluate`
(length-sorted, left-padded batches of ``eval.batch_size``), so both must give the same
predictions and metrics: the bench stops with an error when they do not.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from unlearn.bench.table import Row, ratio_row
from unlearn.bench.world import World, interleaved, median, pooled, round_ratios
from unlearn.data.collate import CLEAN, View, encode
from unlearn.data.schema import MODALITIES, Sample
from unlearn.eval.evaluator import EVAL_TASKS, evaluate
from unlearn.eval.generate import to_device
from unlearn.eval.metrics import aggregate, score
from unlearn.pipeline import eval_splits

TARGET = 5.0  # batched items/s ÷ one-at-a-time items/s, at least
ROW_KEYS: tuple[str, ...] = ("input_ids", "mm_token_type_ids")  # 1-D in encode's output


class EvaluationMismatch(AssertionError):
    """The batched and the one-at-a-time evaluation disagree."""


@torch.no_grad()
def generate_one(model: Any, processor: Any, family: str, sample: Sample, *,
                 max_new_tokens: int, view: View = CLEAN) -> str:
    """Greedy answer to one sample, unpadded, as a batch of one."""
    enc = encode(sample, processor, family, with_answer=False, view=view)
    inputs = {k: v.unsqueeze(0) if k in ROW_KEYS else v for k, v in enc.items()}
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    inputs = to_device(inputs, model)
    tok = processor.tokenizer
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)


def evaluate_one_at_a_time(model: Any, processor: Any, family: str,
                           splits: Mapping[str, Sequence[Sample]], *,
                           max_new_tokens: Mapping[str, int], letter_parser: str = "official",
                           view: View = CLEAN
                           ) -> tuple[dict[str, dict[str, dict[str, float]]], list[dict]]:
    """Metrics and records like :func:`evaluate`, one ``generate`` call per question.

    Questions are visited in :func:`evaluate`'s record order (task, then split), so the two
    record lists align item by item; the order does not change the work done.
    """
    was_training = model.training
    model.eval()
    records = []
    for task in EVAL_TASKS:
        for samples in splits.values():
            for s in samples:
                if s.task != task:
                    continue
                pred = generate_one(model, processor, family, s,
                                    max_new_tokens=int(max_new_tokens[task]), view=view)
                records.append({"split": s.split, "modality": s.modality, "task": task,
                                "question": s.question, "prediction": pred,
                                "score": score(task, pred, s.answer, s.options,
                                               letter_parser)})
    model.train(was_training)
    metrics = {split: {mod: aggregate(r["score"] for r in records
                                      if r["split"] == split and r["modality"] == mod)
                       for mod in MODALITIES}
               for split in splits}
    return metrics, records


def bench_items(splits: Mapping[str, Sequence[Sample]], per_task: int
                ) -> dict[str, list[Sample]]:
    """About ``per_task`` questions of each task, the first ones of every split alike."""
    k = max(1, per_task // max(1, len(splits)))
    out = {}
    for split, samples in splits.items():
        out[split] = [s for task in EVAL_TASKS for s in [x for x in samples if x.task == task][:k]]
    return out


def check_identical(batched: tuple[dict, list[dict]], single: tuple[dict, list[dict]]) -> None:
    """Raise :class:`EvaluationMismatch` unless predictions and metrics are the same."""
    (metrics_b, records_b), (metrics_s, records_s) = batched, single
    if len(records_b) != len(records_s):
        raise EvaluationMismatch(f"{len(records_b)} batched records vs {len(records_s)}")
    for i, (b, s) in enumerate(zip(records_b, records_s, strict=True)):
        if (b["task"], b["split"], b["question"]) != (s["task"], s["split"], s["question"]):
            raise EvaluationMismatch(f"record {i}: items out of order ({b['question']!r} vs "
                                     f"{s['question']!r})")
        if b["prediction"] != s["prediction"]:
            raise EvaluationMismatch(
                f"record {i} ({b['task']}, {b['split']}): batched {b['prediction']!r} vs one "
                f"at a time {s['prediction']!r}")
    if metrics_b != metrics_s:
        raise EvaluationMismatch(f"metrics differ: {metrics_b} vs {metrics_s}")


def eval_speed_rows(world: World, repeats: int, per_task: int = 24) -> list[Row]:
    """One row: items/s of :func:`evaluate` ÷ items/s of :func:`evaluate_one_at_a_time`."""
    cfg = world.cfg
    items = bench_items(eval_splits(cfg, world.bench), per_task)
    n = sum(len(v) for v in items.values())
    tokens = {task: int(cfg.eval.max_new_tokens[task]) for task in EVAL_TASKS}
    kwargs = dict(max_new_tokens=tokens, letter_parser=cfg.eval.letter_parser)
    results: dict[str, Any] = {}

    def timed(name: str, run: Any) -> list[float]:
        start = time.perf_counter()
        results[name] = run()
        return [time.perf_counter() - start]

    rounds = interleaved({
        "batched": lambda: timed("batched", lambda: evaluate(
            world.model, world.processor, world.family, items,
            batch_size=int(cfg.eval.batch_size), **kwargs)),
        "single": lambda: timed("single", lambda: evaluate_one_at_a_time(
            world.model, world.processor, world.family, items, **kwargs)),
    }, repeats)
    check_identical(results["batched"], results["single"])
    per_round = round_ratios(rounds["single"], rounds["batched"])
    fast, slow = (n / median(pooled(rounds[side])) for side in ("batched", "single"))
    new_chars = sum(len(r["prediction"]) for r in results["single"][1]) / n
    return [ratio_row(
        "P2 eval", f"eval items/s, batched ({cfg.eval.batch_size}) ÷ one at a time, "
        f"{n} items, same predictions",
        fast / slow, ">=", TARGET,
        f"{fast:.1f} / {slow:.1f} items/s; rounds {min(per_round):.1f}–{max(per_round):.1f}",
        batched_items_s=fast, single_items_s=slow, items=n, identical=True,
        round_ratios=per_round, mean_prediction_chars=new_chars,
        max_new_tokens=tokens)]
