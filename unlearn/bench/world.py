"""What every measurement shares: configs composed like ``python -m unlearn`` composes them,
the benchmark, a fresh model, and side-by-side timing.

Absolute times on a shared CPU are noise, so every comparison runs both sides in one process,
alternating which goes first, after a warm-up round, and compares medians.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from omegaconf import DictConfig

from unlearn.data.mllmu import MLLMUBench
from unlearn.models.loading import load_model_and_processor
from unlearn.pipeline import load_benchmark
from unlearn.vanilla import tokenizer_corpus

CONF = str(Path(__file__).resolve().parents[2] / "conf")


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The root config with Hydra ``overrides`` (no run directory, nothing written)."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


@dataclass
class World:
    """A composed config, its benchmark, and a fresh model + processor of ``cfg.model``.

    The model is untrained (memory and speed do not depend on the weights' values); its
    tokenizer is trained on the benchmark's texts, as the vanilla stage's is.
    """

    overrides: tuple[str, ...]
    cfg: DictConfig
    bench: MLLMUBench
    model: Any
    processor: Any

    def config(self, *more: str) -> DictConfig:
        """This world's config with ``more`` overrides on top (e.g. ``method=npo``)."""
        return compose([*self.overrides, *more])

    @property
    def family(self) -> str:
        return str(self.cfg.model.family)

    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def load_world(overrides: Sequence[str] = ()) -> World:
    """Build (or reuse) the benchmark of the config and a fresh model for it."""
    cfg = compose(overrides)
    bench = load_benchmark(cfg)
    model, processor = load_model_and_processor(
        cfg.model, extra_corpus=tokenizer_corpus(bench.train_set("finetune")))
    return World(tuple(overrides), cfg, bench, model, processor)


def interleaved(sides: Mapping[str, Callable[[], list[float]]], repeats: int
                ) -> dict[str, list[list[float]]]:
    """Samples of each side, one list per round, over ``repeats`` rounds after a warm-up
    round that is dropped.

    Each call of a side returns its samples (seconds); the order of the sides flips every
    round (A B, B A, ...), so load that drifts during the run weighs on both alike.
    """
    names = list(sides)
    rounds: dict[str, list[list[float]]] = {name: [] for name in names}
    for round_ in range(repeats + 1):
        for name in names if round_ % 2 else names[::-1]:
            values = sides[name]()
            if round_:
                rounds[name].append(values)
    return rounds


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("no samples to take the median of")
    return float(statistics.median(values))


def pooled(rounds: Sequence[Sequence[float]]) -> list[float]:
    return [v for values in rounds for v in values]


def round_ratios(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> list[float]:
    """Median of a's samples ÷ median of b's, round by round: how much the ratio moves
    with the load of the moment (the spread the table shows beside the pooled ratio)."""
    return [median(x) / median(y) for x, y in zip(a, b, strict=True)]
