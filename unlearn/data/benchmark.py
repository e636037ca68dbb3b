"""What the pipeline asks of a benchmark, so that it names no benchmark, split or task itself.

A benchmark at one forget ratio gives its people (forget / retain IDs), its training sets,
its evaluation splits as :class:`~unlearn.data.schema.Sample` lists, and a fingerprint of the
data behind them. The ``data`` config group instantiates one by ``_target_``; the ``eval``
group says how its tasks are scored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import datasets

from unlearn.data.hub import load_config
from unlearn.data.schema import Sample
from unlearn.errors import UserError

# Training sets every benchmark gives (``train_set(name)``):
#   finetune     what the vanilla model learns (the whole benchmark, the papers' fine-tune)
#   forget       the forget people's training items (what unlearning removes)
#   retain       the retain people's training items (what regularised objectives keep)
#   forget_text  the forget people's knowledge as text-only QA pairs (MMUnlearner's masks)
#   retain_text  the same for the retain people
#   gold         what a retain-only "gold" model learns (forget quality compares against it)
TRAIN_SETS: tuple[str, ...] = ("finetune", "forget", "retain", "forget_text", "retain_text",
                               "gold")


class Benchmark(ABC):
    """One benchmark at one forget ratio."""

    #: forget percentages the benchmark defines (``forget_ratio`` is checked against them)
    forget_ratios: ClassVar[tuple[int, ...]]
    #: evaluation splits in their default order; ``forget_split`` is the one unlearning targets
    eval_split_names: ClassVar[tuple[str, ...]]
    forget_split: ClassVar[str] = "forget"

    forget_ids: list[str]
    retain_ids: list[str]

    @abstractmethod
    def eval_split(self, name: str) -> list[Sample]:
        """The samples of one evaluation split (``sample.split == name``)."""

    @abstractmethod
    def train_set(self, name: str) -> list[Sample]:
        """One of :data:`TRAIN_SETS` as samples."""

    @abstractmethod
    def fingerprint(self, part: str = "eval") -> str:
        """Stable hash of the data behind ``part``: ``"finetune"`` keys what depends only on
        the fine-tuning data (the vanilla model), ``"eval"`` everything a run reads."""

    def eval_splits(self, names: tuple[str, ...] | list[str] | None = None
                    ) -> dict[str, list[Sample]]:
        """Several splits by name (default: all, in :attr:`eval_split_names` order)."""
        names = tuple(names or self.eval_split_names)
        unknown = [n for n in names if n not in self.eval_split_names]
        if unknown:
            raise ValueError(f"{type(self).__name__} has no evaluation split {unknown} "
                             f"(it has {list(self.eval_split_names)})")
        return {name: self.eval_split(name) for name in names}


class BenchmarkError(UserError, ValueError):
    """A forget ratio the benchmark lacks, or forget and retain sets that share people."""


@dataclass
class HubBenchmark(Benchmark):
    """A benchmark read from a hub id or a local folder in the hub layout
    (:mod:`unlearn.data.hub`), one config at a time, each loaded once per instance.

    Construction checks the forget ratio and reads the people of :attr:`forget_config` and
    :attr:`retain_config` (:meth:`people`), which must be disjoint.
    """

    #: what the error message calls the people a config lists (MLLMU-Bench: profile IDs)
    people_noun: ClassVar[str] = "people"

    source: str = ""
    forget_ratio: int = 0
    seed: int = 0
    cache_dir: str | None = None
    revision: str | None = None
    forget_ids: list[str] = field(init=False)
    retain_ids: list[str] = field(init=False)
    _datasets: dict[str, datasets.Dataset] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.forget_ratio not in self.forget_ratios:
            raise BenchmarkError(f"{type(self).__name__}: forget_ratio must be one of "
                                 f"{self.forget_ratios}, got {self.forget_ratio}")
        self.forget_ids = self.people(self.forget_config)
        self.retain_ids = self.people(self.retain_config)
        shared = sorted(set(self.forget_ids) & set(self.retain_ids))
        if shared:
            raise BenchmarkError(
                f"{self.forget_config} and {self.retain_config} of {self.source!r} share "
                f"{len(shared)} {self.people_noun} ({shared[:5]}); they must be disjoint")

    @property
    @abstractmethod
    def forget_config(self) -> str:
        """The config listing the forget people at this ratio."""

    @property
    @abstractmethod
    def retain_config(self) -> str:
        """The config listing the retain people at this ratio."""

    @abstractmethod
    def people(self, config: str) -> list[str]:
        """The people (IDs or names) a config lists."""

    def dataset(self, config: str) -> datasets.Dataset:
        """One config, loaded once (:meth:`load`)."""
        if config not in self._datasets:
            self._datasets[config] = self.load(config)
        return self._datasets[config]

    def load(self, config: str) -> datasets.Dataset:
        """One config's ``train`` split; a benchmark with other rules overrides this."""
        return load_config(self.source, config, cache_dir=self.cache_dir, revision=self.revision)
