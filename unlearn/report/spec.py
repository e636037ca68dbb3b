"""An experiment's ``report:`` block: the table layout, the paper table beside it and the
plots, checked key by key so a typo fails before any job runs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

from unlearn.data.clear import ClearBench
from unlearn.data.mllmu import MLLMUBench
from unlearn.errors import UserError
from unlearn.eval.metrics import METRICS as REGISTRY_METRICS

# the evaluation splits of the benchmarks a report can lay out (MLLMU-Bench, CLEAR)
SPLITS = tuple(dict.fromkeys(MLLMUBench.eval_split_names + ClearBench.eval_split_names))
MODALITIES = ("image_text", "text_only")
METRICS = REGISTRY_METRICS
VIEWS = ("clean", "reverse_prompt")   # metrics.json top level, or its eval.attack section
VIEW = "view"                          # the row key naming the view
CHANGES = ("value", "delta", "reduction")   # a plot axis: unlearned, unlearned − base, base − it


class ReportSpecError(UserError, ValueError):
    """A bad ``report`` block: names the key and the allowed values."""


@dataclass(frozen=True)
class Cell:
    """One number of a row: a split × modality × metric of metrics.json."""

    split: str
    modality: str
    metric: str

    @property
    def name(self) -> str:
        return f"{self.split}/{self.modality}/{self.metric}"


@dataclass(frozen=True)
class Axis:
    cell: Cell
    change: str = "value"


@dataclass(frozen=True)
class Plot:
    """Forget vs utility, one point per unlearned row (Vgid Figure 4, MMUnlearner Figure 4):
    one panel per ``y``; points of one treatment joined along ``line`` (e.g. forget_ratio)."""

    name: str
    title: str
    x: Axis
    y: tuple[Axis, ...]
    line: str | None = None


@dataclass(frozen=True)
class Paper:
    """Where the paper's numbers sit: ``experiments/paper_tables/<table>.csv``; ``keys`` maps a
    paper column to our row key(s) (compared through the labels), ``where`` fixes other
    columns, ``metrics`` renames our metrics where the paper's differ, ``modality`` is ours
    that a paper without a modality column reports."""

    table: str
    keys: Mapping[str, tuple[str, ...]]
    where: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, str] = field(default_factory=dict)
    modality: str = "image_text"


@dataclass(frozen=True)
class Spec:
    name: str
    title: str
    rows: tuple[str, ...]
    treatment: tuple[str, ...]
    columns: tuple[Cell, ...]
    labels: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    base_label: str | None = "Base"
    views: tuple[str, ...] = ("clean",)
    paper: Paper | None = None
    plots: tuple[Plot, ...] = ()
    masks: bool = False
    resamples: int = 1000
    seed: int = 0
    note: str = ""


def _fields(where: str, block: Mapping, required: tuple[str, ...], optional: tuple[str, ...]
            ) -> None:
    if not isinstance(block, Mapping):
        raise ReportSpecError(f"{where} must be a mapping, got {block!r}")
    unknown = [k for k in block if k not in required + optional]
    if unknown:
        raise ReportSpecError(f"{where} has unknown key(s) {unknown}; allowed: "
                              f"{list(required + optional)}")
    missing = [k for k in required if block.get(k) is None]
    if missing:
        raise ReportSpecError(f"{where} lacks {missing}")


def _one_of(where: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ReportSpecError(f"{where}={value!r} is not one of {list(allowed)}")
    return value


def _strings(where: str, value: Any) -> tuple[str, ...]:
    values = (value,) if isinstance(value, str) else tuple(value or ())
    if not values or not all(isinstance(v, str) for v in values):
        raise ReportSpecError(f"{where} must be a key or a non-empty list of keys, got {value!r}")
    return values


def _cell(where: str, block: Mapping) -> Cell:
    _fields(where, block, ("split", "modality", "metric"), ("change",))
    return Cell(_one_of(f"{where}.split", block["split"], SPLITS),
                _one_of(f"{where}.modality", block["modality"], MODALITIES),
                _one_of(f"{where}.metric", block["metric"], METRICS))


def _axis(where: str, block: Mapping) -> Axis:
    cell = _cell(where, block)
    return Axis(cell, _one_of(f"{where}.change", block.get("change", "value"), CHANGES))


def _columns(block: Mapping) -> tuple[Cell, ...]:
    _fields("report.columns", block, ("splits", "modalities", "metrics"), ())
    lists = {k: _strings(f"report.columns.{k}", block[k]) for k in ("splits", "modalities",
                                                                     "metrics")}
    for key, allowed in (("splits", SPLITS), ("modalities", MODALITIES), ("metrics", METRICS)):
        for value in lists[key]:
            _one_of(f"report.columns.{key}", value, allowed)
    return tuple(Cell(s, m, x) for s in lists["splits"] for m in lists["modalities"]
                 for x in lists["metrics"])


def _paper(block: Mapping, rows: tuple[str, ...]) -> Paper:
    _fields("report.paper", block, ("table", "keys"), ("where", "metrics", "modality"))
    keys = {str(col): _strings(f"report.paper.keys.{col}", ours)
            for col, ours in dict(block["keys"]).items()}
    for col, ours in keys.items():
        for key in ours:
            if key not in rows:
                raise ReportSpecError(f"report.paper.keys.{col}={key!r} is not one of the "
                                      f"row keys {list(rows)}")
    metrics = dict(block.get("metrics") or {})
    for ours in metrics:
        _one_of("report.paper.metrics", ours, METRICS)
    return Paper(str(block["table"]), keys, {str(k): str(v) for k, v in
                                             dict(block.get("where") or {}).items()},
                 {str(k): str(v) for k, v in metrics.items()},
                 _one_of("report.paper.modality", block.get("modality", "image_text"),
                         MODALITIES))


def _plot(i: int, block: Mapping, rows: tuple[str, ...]) -> Plot:
    where = f"report.plots[{i}]"
    _fields(where, block, ("name", "x", "y"), ("title", "line"))
    ys = block["y"]
    if isinstance(ys, Mapping) or not ys:
        raise ReportSpecError(f"{where}.y must be a non-empty list of cells")
    line = block.get("line")
    if line is not None and line not in rows:
        raise ReportSpecError(f"{where}.line={line!r} is not one of the row keys {list(rows)}")
    return Plot(str(block["name"]), str(block.get("title", block["name"])),
                _axis(f"{where}.x", block["x"]),
                tuple(_axis(f"{where}.y[{j}]", y) for j, y in enumerate(ys)), line)


def parse_report(block: DictConfig | Mapping) -> Spec:
    """The validated layout; a :class:`ReportSpecError` names the first bad key."""
    if isinstance(block, DictConfig):
        block = OmegaConf.to_container(block, resolve=True)
    _fields("report", block, ("name", "title", "rows", "columns"),
            ("treatment", "labels", "base_label", "views", "paper", "plots", "masks",
             "resamples", "seed", "note"))
    rows = _strings("report.rows", block["rows"])
    treatment = _strings("report.treatment", block.get("treatment") or rows[-1])
    for key in treatment:
        if key not in rows or key == VIEW:
            raise ReportSpecError(f"report.treatment={key!r} is not one of the row keys "
                                  f"{[r for r in rows if r != VIEW]}")
    views = _strings("report.views", block.get("views") or "clean")
    for view in views:
        _one_of("report.views", view, VIEWS)
    if len(views) > 1 and VIEW not in rows:
        raise ReportSpecError(f"report.views={list(views)} needs {VIEW!r} among report.rows")
    labels = block.get("labels") or {}
    for key in labels:
        if key not in rows:
            raise ReportSpecError(f"report.labels.{key} is not one of the row keys {list(rows)}")
    resamples = block.get("resamples", 1000)
    if not isinstance(resamples, int) or resamples < 1000:
        raise ReportSpecError(f"report.resamples={resamples!r} must be an integer >= 1000")
    paper = block.get("paper")
    return Spec(
        name=str(block["name"]), title=str(block["title"]), rows=rows, treatment=treatment,
        columns=_columns(block["columns"]),
        labels={k: {str(v): str(lab) for v, lab in dict(m).items()} for k, m in labels.items()},
        base_label=block.get("base_label", "Base"), views=views,
        paper=_paper(paper, rows) if paper is not None else None,
        plots=tuple(_plot(i, p, rows) for i, p in enumerate(block.get("plots") or ())),
        masks=bool(block.get("masks", False)), resamples=resamples,
        seed=int(block.get("seed", 0)), note=str(block.get("note", "")))
