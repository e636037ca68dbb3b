"""The ``data`` config group as objects: the benchmark's class, its offline twin, the benchmark.

``data.benchmark._target_`` names a :class:`~unlearn.data.benchmark.Benchmark` subclass and
``data.synthetic`` (or null) a twin object with ``recipe`` (what identifies its content on
every machine) and ``build(root)``; the rest of the framework asks these, never a name.
"""

from __future__ import annotations

from typing import Any, Protocol

from hydra.utils import get_class, instantiate
from omegaconf import DictConfig

from unlearn.data.benchmark import Benchmark
from unlearn.errors import UserError
from unlearn.utils import plain


class TwinObject(Protocol):
    """An offline twin of a benchmark, written in its hub layout and schema."""

    @property
    def recipe(self) -> dict[str, Any]: ...

    def build(self, root: Any) -> Any: ...


def benchmark_class(cfg: DictConfig) -> type[Benchmark]:
    """The class ``data.benchmark._target_`` names (checked to be a Benchmark)."""
    target = (cfg.data.get("benchmark") or {}).get("_target_")
    if not target:
        raise UserError(f"data={cfg.data.get('name')!r} has no benchmark._target_ "
                        "(the Benchmark class that reads it, e.g. unlearn.data.mllmu.MLLMUBench)")
    try:
        cls = get_class(target)
    except Exception as e:  # hydra wraps import errors in several types
        raise UserError(f"data.benchmark._target_={target!r} cannot be imported: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, Benchmark)):
        raise UserError(f"data.benchmark._target_={target!r} is not a "
                        "unlearn.data.benchmark.Benchmark subclass")
    return cls


def data_twin(cfg: DictConfig) -> TwinObject | None:
    """The twin ``data.synthetic`` describes, or None for a real benchmark."""
    synthetic = cfg.data.get("synthetic")
    return instantiate(synthetic) if synthetic else None


def load_benchmark(cfg: DictConfig) -> Benchmark:
    """Build the twin if the data has one, then read it (or the real benchmark) with the
    benchmark's own loader: the twin exercises exactly the code that reads the real data."""
    twin = data_twin(cfg)
    if twin is not None:
        twin.build(str(cfg.data.source))
    # called directly, not through hydra's instantiate, so that a loader's own error (a
    # missing config, people in both sets) reaches the user as it is, not wrapped
    options = {k: v for k, v in plain(cfg.data.benchmark).items() if k != "_target_"}
    return benchmark_class(cfg)(source=str(cfg.data.source), forget_ratio=int(cfg.forget_ratio),
                                seed=int(cfg.seed), **options)
