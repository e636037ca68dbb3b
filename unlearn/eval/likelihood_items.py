"""Likelihood metrics of evaluated items (``eval.likelihood``).

Which items a likelihood metric can score, and their per-item values written into the same
records as the generation metrics, so split means, bootstrap intervals and W&B tables come
from one place. An item with options (MLLMU classification, CLEAR name choice) is scored as
a question whose truth is the right option's text and whose wrong answers are the other
options (normalised probability, as CLEAR's face recognition); an item with
``meta["perturbed"]`` (CLEAR captions) as it is (plain probability).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from rich.progress import Progress

from unlearn.data.collate import CLEAN, View
from unlearn.data.schema import Sample
from unlearn.eval.likelihood import likelihood_rows
from unlearn.eval.likelihood_metrics import forget_quality, item_values, model_utility


def likelihood_item(sample: Sample) -> tuple[Sample, bool] | None:
    """``(item, normalized)`` for a sample a likelihood metric can score, else None."""
    if sample.options and sample.answer in sample.options:
        truth = sample.options[sample.answer]
        wrong = [v for k, v in sample.options.items() if k != sample.answer]
        return replace(sample, task="qa", answer=truth, options=None,
                       meta={"perturbed": wrong}), True
    if sample.meta.get("perturbed"):
        return replace(sample, task="qa"), False
    return None


def add_likelihood(model: Any, processor: Any, family: str, samples: Sequence[Sample],
                   records: Sequence[dict], task: str, *, forget_split: str, batch_size: int,
                   view: View = CLEAN, progress: Progress | None = None) -> None:
    """Score ``samples`` (one task, ``records[i]`` is ``samples[i]``'s record) and add
    ``{task}_prob`` and ``{task}_truth_ratio`` to each scorable record's ``score`` (per-item
    values whose mean is CLEAR's metric) and the raw truth ratio as ``record["truth_ratio"]``
    (forget quality compares these)."""
    found = [(i, *item) for i, s in enumerate(samples) if (item := likelihood_item(s))]
    if not found:
        return
    rows = likelihood_rows(model, processor, family, [item for _, item, _ in found],
                           batch_size=batch_size, view=view, progress=progress)
    for (i, _, normalized), row in zip(found, rows, strict=True):
        record = records[i]
        values = item_values(row, forget=record["split"] == forget_split,
                             normalized=normalized)
        record["score"][f"{task}_prob"] = values["prob"]
        if "truth_ratio" in values:
            record["score"][f"{task}_truth_ratio"] = values["truth_ratio"]
            record["truth_ratio"] = values["raw_truth_ratio"]


def likelihood_summary(metrics: dict, records: Sequence[dict], *, forget_split: str,
                       task: str, utility: Sequence[str],
                       gold_records: Sequence[dict] | None = None) -> dict[str, float]:
    """CLEAR's two summary numbers of one evaluated model: ``forget_quality`` (the KS test of
    its per-item truth ratios on ``forget_split``'s ``task`` items against the gold model's,
    when ``gold_records`` are given) and ``model_utility`` (the harmonic mean of every
    likelihood metric and every ``utility`` metric of the other splits)."""
    out = {}
    if gold_records is not None:
        def ratios(rows: Sequence[dict]) -> list[float]:
            return [r["truth_ratio"] for r in rows
                    if r["split"] == forget_split and r["task"] == task and "truth_ratio" in r]
        out["forget_quality"] = forget_quality(ratios(records), ratios(gold_records))
    values = [v for split, by_mod in metrics.items() if split != forget_split
              for by_metric in by_mod.values() for k, v in by_metric.items()
              if k in utility or k.endswith(("_prob", "_truth_ratio"))]
    if values:
        out["model_utility"] = model_utility(values)
    return out
