"""Percentile bootstrap over evaluation items, paired between the base and the unlearned model.

Both models answer the same questions, so the uncertainty of their difference is that of the
question sample: each resample draws one set of item indices and scores both models on it.
A fresh generator from ``seed`` per call makes every cell's interval independent of the order
in which a table is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 1000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean over items and its percentile bootstrap interval."""

    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class Paired:
    """Base and unlearned scores on the same ``n`` items, and their difference (unlearned −
    base), each with its interval from the same resampled items."""

    base: Interval
    unlearned: Interval
    delta: Interval
    n: int


def _resample_means(scores: np.ndarray, index: np.ndarray) -> np.ndarray:
    return scores[index].mean(axis=1)


def _interval(values: np.ndarray, draws: np.ndarray, confidence: float) -> Interval:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return Interval(float(values.mean()), float(low), float(high))


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    if n == 0:
        raise ValueError("no items to resample")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap(scores: Sequence[float], *, resamples: int = RESAMPLES,
              confidence: float = CONFIDENCE, seed: int = 0) -> Interval:
    """One model's mean score over items with its ``confidence`` percentile interval."""
    values = np.asarray(scores, dtype=float)
    index = _indices(len(values), resamples, seed)
    return _interval(values, _resample_means(values, index), confidence)


def paired_bootstrap(base: Sequence[float], unlearned: Sequence[float], *,
                     resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                     seed: int = 0) -> Paired:
    """Intervals for both models and for unlearned − base, from the same resampled items
    (``base[i]`` and ``unlearned[i]`` are the two models' scores on item ``i``)."""
    b = np.asarray(base, dtype=float)
    u = np.asarray(unlearned, dtype=float)
    if b.shape != u.shape:
        raise ValueError(f"paired scores differ in length: {b.shape} vs {u.shape}")
    index = _indices(len(b), resamples, seed)
    b_draws, u_draws = _resample_means(b, index), _resample_means(u, index)
    return Paired(_interval(b, b_draws, confidence), _interval(u, u_draws, confidence),
                  _interval(u - b, u_draws - b_draws, confidence), n=len(b))
