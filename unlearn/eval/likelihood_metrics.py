"""CLEAR's likelihood metrics over :func:`unlearn.eval.likelihood.likelihood_rows` rows.

Pure functions of the per-item losses, as CLEAR's official evaluation defines them (CLEAR,
Dontsov et al., 2024, metrics carried over from TOFU; docs/likelihood.md). A loss is always
the mean NLL per answer token, also where a probability is formed from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import hmean, ks_2samp

from unlearn.errors import UserError

Row = Mapping[str, Any]


def _check(rows: Sequence[Row], *, perturbed: bool) -> None:
    if not rows:
        raise UserError("likelihood metrics of no items: the split is empty")
    missing = sum(not row["perturbed_loss"] for row in rows) if perturbed else 0
    if missing:
        raise UserError(f"{missing} of {len(rows)} items have no meta['perturbed'] answers; "
                        "the truth ratio and the normalised probability need them")


def probability(rows: Sequence[Row], *, normalized: bool) -> float:
    """CLEAR's "probability", with ``p = exp(-loss)`` and ``loss`` the per-token mean NLL.

    ``normalized=False`` (caption tasks, CLEAR's ``eval_log*``): ``mean(p_true)``.
    ``normalized=True`` (tasks with options: face recognition, real faces, real world):
    ``mean(p_true / (p_true + sum(p_perturbed)))``. Per-token means make these geometric-mean
    token probabilities, not sequence probabilities; CLEAR defines them so.
    """
    _check(rows, perturbed=normalized)
    p_true = np.exp(-np.array([row["gt_loss"] for row in rows]))
    if not normalized:
        return float(p_true.mean())
    p_false = np.array([np.exp(-np.array(row["perturbed_loss"])).sum() for row in rows])
    return float((p_true / (p_true + p_false)).mean())


def truth_ratios(rows: Sequence[Row]) -> list[float]:
    """Per item ``TR = exp(mean(perturbed_loss) - paraphrase_loss)``.

    TR < 1: the paraphrased truth is less likely than the wrong answers on average. Forget
    quality compares these raw values between two models.
    """
    _check(rows, perturbed=True)
    gap = np.array([np.mean(row["perturbed_loss"]) - row["paraphrase_loss"] for row in rows])
    with np.errstate(over="ignore"):  # a collapsed model may reach inf, whose limits hold below
        return np.exp(gap).tolist()


def truth_ratio(rows: Sequence[Row], *, forget: bool) -> float:
    """CLEAR's aggregated truth ratio: ``mean(min(TR, 1/TR))`` on the forget split (1 when
    truth and wrong answers are equally likely), ``mean(max(0, 1 - 1/TR))`` on the others
    (1 when the truth is far more likely)."""
    tr = np.array(truth_ratios(rows))
    with np.errstate(divide="ignore"):
        inverse = 1.0 / tr
    value = np.minimum(tr, inverse) if forget else np.maximum(0.0, 1.0 - inverse)
    return float(value.mean())


def forget_quality(tr_unlearned: Sequence[float], tr_gold: Sequence[float]) -> float:
    """``ks_2samp(tr_unlearned, tr_gold).pvalue``: the two-sample Kolmogorov-Smirnov p-value
    between the forget split's per-item truth ratios (:func:`truth_ratios`) of the unlearned
    model and of a gold model fine-tuned on the retain split only. High: indistinguishable."""
    if not len(tr_unlearned) or not len(tr_gold):
        raise UserError(f"forget quality needs truth ratios of both models; got "
                        f"{len(tr_unlearned)} unlearned and {len(tr_gold)} gold")
    return float(ks_2samp(tr_unlearned, tr_gold).pvalue)


def model_utility(values: Sequence[float]) -> float:
    """``hmean(values)`` of the non-forget metrics; 0 when any value is 0."""
    if not len(values) or min(values) < 0:
        raise UserError(f"model utility is the harmonic mean of non-negative metric values; "
                        f"got {list(values)}")
    return 0.0 if min(values) == 0 else float(hmean(values))


def item_values(row: Row, *, forget: bool, normalized: bool) -> dict[str, float]:
    """One item's share of :func:`probability` and :func:`truth_ratio` (their means over a
    split's items are those metrics) and its ``raw_truth_ratio`` (:func:`truth_ratios`); the
    truth ratios only when the item has wrong answers."""
    out = {"prob": probability([row], normalized=normalized)}
    if row["perturbed_loss"]:
        out["truth_ratio"] = truth_ratio([row], forget=forget)
        out["raw_truth_ratio"] = truth_ratios([row])[0]
    return out


def likelihood_metrics(rows: Sequence[Row], *, forget: bool, normalized: bool
                       ) -> dict[str, float]:
    """One split's ``prob`` (:func:`probability`) and ``truth_ratio`` (:func:`truth_ratio`);
    the truth ratio only when the items have wrong answers to compare with."""
    out = {"prob": probability(rows, normalized=normalized)}
    if any(row["perturbed_loss"] for row in rows):
        out["truth_ratio"] = truth_ratio(rows, forget=forget)
    return out
