"""Rows of an experiment's table from its jobs, the paper's numbers beside them, and the
markdown and CSV renderings. One renderer for every table: the layout is the ``Spec``."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from unlearn.report.runs import OK, Job, row_value
from unlearn.report.spec import VIEW, Cell, Paper, Spec
from unlearn.report.stats import Interval, bootstrap, paired_bootstrap

ROOT = Path(__file__).resolve().parents[2]
PAPER_TABLES = ROOT / "experiments" / "paper_tables"
# our model / split / modality names -> the transcribed tables' (experiments/paper_tables/README.md)
PAPER_MODELS = {"llava7b": "llava-1.5-7b", "qwen2vl7b": "qwen2-vl-7b"}
PAPER_SPLITS = {"celebrity": "realworld", "real_world": "realworld", "real_faces": "realface"}
PAPER_MODALITIES = {"image_text": "vqa", "text_only": "qa"}
CSV_FIELDS = ("row", "kind", "job", "status", "message", "split", "modality", "metric", "n",
              "value", "ci_low", "ci_high", "delta", "delta_low", "delta_high", "unit",
              "paper_value", "paper_model")


def percent(metric: str) -> bool:
    """Accuracies are shown in percent, as both papers print them; ROUGE and BLEU as scores."""
    return metric.endswith("_acc")


@dataclass
class Result:
    """A cell of a row: the mean with its interval, and (unlearned rows) the paired change."""

    value: Interval | None
    delta: Interval | None = None
    n: int = 0
    paper: str | None = None


@dataclass
class Row:
    keys: dict[str, str | None]
    label: str
    kind: str                       # base | unlearned
    job: Job
    view: str
    status: str = OK
    message: str = ""
    cells: dict[Cell, Result] = field(default_factory=dict)
    paper_model: str | None = None


def _label(spec: Spec, key: str, value: str | None) -> str:
    if value is None:
        return ""
    return spec.labels.get(key, {}).get(value, value)


def row_label(spec: Spec, keys: Mapping[str, str | None], which: Sequence[str]) -> str:
    """The labels of ``which`` keys joined (empty labels skipped): matched against the
    paper's row labels, so ``σ=`` + ``0.2`` style pairs compose as the paper prints them."""
    return " ".join(x for x in (_label(spec, k, keys.get(k)) for k in which) if x)


def _paired(spec: Spec, job: Job, view: str, cell: Cell) -> Result:
    base, new = job.scores(view, "base", cell), job.scores(view, "unlearned", cell)
    if base and new and base.keys() == new.keys():
        items = sorted(base)
        p = paired_bootstrap([base[i] for i in items], [new[i] for i in items],
                             resamples=spec.resamples, seed=spec.seed)
        return Result(p.unlearned, p.delta, p.n)
    value = job.metric(view, "unlearned", cell)  # no per-item scores: the mean alone
    return Result(None if value is None else Interval(value, float("nan"), float("nan")))


def _single(spec: Spec, job: Job, view: str, cell: Cell) -> Result:
    scores = job.scores(view, "base", cell)
    if scores:
        return Result(bootstrap(list(scores.values()), resamples=spec.resamples,
                                seed=spec.seed), n=len(scores))
    value = job.metric(view, "base", cell)
    return Result(None if value is None else Interval(value, float("nan"), float("nan")))


def _order(spec: Spec, jobs: Sequence[Job], rows: Sequence[str],
           value: Callable[[Job, str, str], str | None]) -> dict[str, dict[str, int]]:
    """Sort rank of each key's values: the labels' order (the paper's), then first seen."""
    order: dict[str, dict[str, int]] = {}
    for key in rows:
        ranks = {v: i for i, v in enumerate(spec.labels.get(key, {}))}
        values = spec.views if key == VIEW else [value(job, key, "clean") for job in jobs]
        for v in values:
            ranks.setdefault(str(v), len(ranks))
        order[key] = ranks
    return order


def _distinguishing(jobs: Sequence[Job], spec: Spec) -> tuple[str, ...]:
    """Overrides that differ between jobs the row keys cannot tell apart (a sweep wider than
    the layout, e.g. ``forget_ratio=5,10,15`` on a one-ratio table): added as row keys, so no
    job hides another."""
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        groups.setdefault(tuple(job.value(k) for k in spec.rows if k != VIEW), []).append(job)
    extra: list[str] = []
    for members in groups.values():
        for key in sorted({k for j in members for k in j.overrides}):
            if len({j.overrides.get(key) for j in members}) > 1 and key not in extra:
                extra.append(key)
    return tuple(extra)


def build_rows(spec: Spec, jobs: Sequence[Job]) -> tuple[tuple[str, ...], list[Row]]:
    """The table's row keys (the spec's, after any distinguishing overrides) and its rows:
    per group of the non-treatment keys a base row (the base model of its first finished
    job), then one row per job and view, failed and diverged jobs included."""
    extra = _distinguishing(jobs, spec)
    keys = extra + spec.rows

    def value(job: Job, key: str, view: str) -> str | None:
        return job.overrides.get(key) if key in extra else row_value(job, key, view)

    order = _order(spec, jobs, keys, value)

    rows: list[Row] = []
    bases: dict[tuple, Row] = {}
    for job in jobs:
        for view in spec.views:
            values = {k: value(job, k, view) for k in keys}
            group = tuple(values[k] for k in keys if k not in spec.treatment)
            if spec.base_label is not None and job.status == OK and group not in bases:
                base = Row({**values, **dict.fromkeys(spec.treatment)}, spec.base_label,
                           "base", job, view)
                base.cells = {c: _single(spec, job, view, c) for c in spec.columns}
                bases[group] = base
            if job.status == OK and not job.has(view, "unlearned"):
                continue  # an evaluation-only job (method=none, no view): its base row holds it
            row = Row(values, row_label(spec, values, spec.treatment) or "?", "unlearned", job,
                      view, job.status, job.message)
            if job.status == OK:
                row.cells = {c: _paired(spec, job, view, c) for c in spec.columns}
            rows.append(row)
    rows += bases.values()
    for row in rows:
        row.paper_model = PAPER_MODELS.get(row.job.value("model.name") or "")

    def rank(row: Row) -> tuple:
        return tuple(-1 if row.kind == "base" and k in spec.treatment
                     else order[k].get(str(row.keys[k]), len(order[k])) for k in keys) + (
            row.job.num,)
    rows.sort(key=rank)
    return keys, rows


def load_paper(paper: Paper) -> list[dict[str, str]]:
    path = PAPER_TABLES / f"{paper.table}.csv"
    if not path.exists():
        raise FileNotFoundError(f"report.paper.table={paper.table!r}: no {path}")
    with path.open(newline="") as f:
        return [r for r in csv.DictReader(f)
                if all(r.get(k) == v for k, v in paper.where.items())]


def paper_cell(paper: Paper, records: Sequence[Mapping[str, str]], label_of: Mapping[str, str],
               model: str | None, forget_ratio: str | None, cell: Cell) -> str | None:
    """The paper's number for this row and cell, or None where model or setting differ."""
    if model is None:
        return None
    split = PAPER_SPLITS.get(cell.split, cell.split)
    metric = paper.metrics.get(cell.metric, cell.metric)
    for r in records:
        if r["model"] != model or r["split"] != split or r["metric"] != metric:
            continue
        if r.get("forget_ratio") and r["forget_ratio"] != forget_ratio:
            continue
        if "modality" in r:
            if r["modality"] != PAPER_MODALITIES[cell.modality]:
                continue
        elif cell.modality != paper.modality:
            continue
        if all(r.get(col) == label_of[col] for col in paper.keys):
            return r["value"]
    return None


def attach_paper(spec: Spec, rows: Sequence[Row]) -> list[dict[str, str]]:
    """Fill each row's paper numbers (same model and setting only); returns the records."""
    if spec.paper is None:
        return []
    records = load_paper(spec.paper)
    for row in rows:
        label_of = {col: (row.label if row.kind == "base" and set(ours) <= set(spec.treatment)
                          else row_label(spec, row.keys, ours))
                    for col, ours in spec.paper.keys.items()}
        for cell, result in row.cells.items():
            result.paper = paper_cell(spec.paper, records, label_of, row.paper_model,
                                      row.job.value("forget_ratio"), cell)
    return records


def _fmt(metric: str, x: float, signed: bool = False) -> str:
    if x != x:  # NaN: no interval
        return "?"
    scale, digits = (100.0, 1) if percent(metric) else (1.0, 3)
    return f"{x * scale:+.{digits}f}" if signed else f"{x * scale:.{digits}f}"


def _interval(metric: str, iv: Interval | None, signed: bool = False) -> str:
    if iv is None:
        return "—"
    if iv.low != iv.low:
        return _fmt(metric, iv.mean, signed)
    return (f"{_fmt(metric, iv.mean, signed)} [{_fmt(metric, iv.low, signed)}, "
            f"{_fmt(metric, iv.high, signed)}]")


def _header(spec: Spec, keys: Sequence[str]) -> list[str]:
    names = {"image_text": "img", "text_only": "txt"}
    cells = [f"{c.split} {names[c.modality]} {c.metric}" for c in spec.columns]
    return [k for k in keys if k not in spec.treatment] + ["row", "job", "status"] + cells


def _md(lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(lines[0]) + " |", "|" + "---|" * len(lines[0])]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in lines[1:]]
    return "\n".join(out)


def _status(row: Row) -> str:
    return row.status if row.status == OK else f"**{row.status}**: {row.message}"


def markdown(spec: Spec, keys: Sequence[str], rows: Sequence[Row],
             reference: str = "") -> str:
    """The values table (with the paper's numbers in a row under ours where they match) and
    the change table (unlearned − base, paired)."""
    group_keys = [k for k in keys if k not in spec.treatment]

    def lead(row: Row) -> list[str]:
        return [_label(spec, k, row.keys[k]) for k in group_keys] + [
            row.label, str(row.job.num), _status(row)]

    values = [_header(spec, keys)]
    deltas = [_header(spec, keys)]
    for row in rows:
        values.append(lead(row) + [_interval(c.metric, row.cells[c].value) if c in row.cells
                                   else "—" for c in spec.columns])
        if any(r.paper is not None for r in row.cells.values()):
            values.append([""] * len(group_keys) + [f"↳ paper ({row.paper_model})", "", ""] + [
                row.cells[c].paper or "" for c in spec.columns])
        if row.kind == "unlearned":
            deltas.append(lead(row) + [_interval(c.metric, row.cells[c].delta, signed=True)
                                       if c in row.cells else "—" for c in spec.columns])
    text = [_md(values), "", "Change from the base model (unlearned − base, paired over "
            "items):", "", _md(deltas)]
    if reference:
        text += ["", reference]
    return "\n".join(text)


def paper_reference(spec: Spec, records: Sequence[Mapping[str, str]],
                    rows: Sequence[Row]) -> str:
    """The paper's table in our layout when no row of ours matches its model and setting (the
    tiny default): for reading the shape, never a comparison of numbers."""
    if spec.paper is None or any(r.paper for row in rows for r in row.cells.values()):
        return ""
    paper = spec.paper
    seen: dict[tuple, None] = {}
    for r in records:
        seen.setdefault((r["model"], r.get("forget_ratio", ""),
                         *(r[col] for col in paper.keys)), None)
    table = {}
    for model, ratio, *labels in seen:
        label_of = dict(zip(paper.keys, labels, strict=True))
        table[model, ratio, *labels] = [
            paper_cell(paper, records, label_of, model, ratio or None, c) or ""
            for c in spec.columns]
    # the columns the paper fills (a benchmark's layout has cells the paper never reports)
    filled = [i for i in range(len(spec.columns)) if any(v[i] for v in table.values())]
    lines = [["paper model", "forget %", *paper.keys] + [
        f"{spec.columns[i].split} {spec.columns[i].modality} {spec.columns[i].metric}"
        for i in filled]]
    for (model, ratio, *labels), values in table.items():
        lines.append([model, ratio or "", *labels] + [values[i] for i in filled])
    return (f"The paper's numbers ({paper.table}; other models than ours, so not beside our "
            "rows):\n\n" + _md(lines))


def csv_text(spec: Spec, keys: Sequence[str], rows: Sequence[Row]) -> str:
    """One line per row and cell; values in the units the paper prints (accuracy in %)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*keys, *CSV_FIELDS], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        for cell in spec.columns:
            result = row.cells.get(cell)
            scale = 100.0 if percent(cell.metric) else 1.0

            def num(x: float | None) -> str:
                return "" if x is None or x != x else f"{x * scale:.6g}"  # noqa: B023
            value, delta = (result.value, result.delta) if result else (None, None)
            writer.writerow({
                **{k: row.keys[k] if row.keys[k] is not None else "" for k in keys},
                "row": row.label, "kind": row.kind, "job": row.job.num, "status": row.status,
                "message": row.message, "split": cell.split, "modality": cell.modality,
                "metric": cell.metric, "n": result.n if result else "",
                "value": num(value and value.mean), "ci_low": num(value and value.low),
                "ci_high": num(value and value.high), "delta": num(delta and delta.mean),
                "delta_low": num(delta and delta.low), "delta_high": num(delta and delta.high),
                "unit": "percent" if percent(cell.metric) else "score",
                "paper_value": (result.paper or "") if result else "",
                "paper_model": row.paper_model or ""})
    return out.getvalue()
