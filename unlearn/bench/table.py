"""The bench's one table: a row per measured ratio, its target beside it and whether it is met.

Rows measured here carry a numeric ratio; rows added from a JSON file (``--extra``) carry
whatever text their author measured, and are judged by the number they start with against
the target's comparison (``"≤ 600 s"``, ``">= 5"``): both in the same unit, which the
target's text names.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

COMPARISONS: dict[str, str] = {"≤": "<=", "<=": "<=", "<": "<", "≥": ">=", ">=": ">=", ">": ">"}
_TARGET = re.compile(r"^\s*(≤|<=|<|≥|>=|>)\s*([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


@dataclass
class Row:
    """One line of the table; ``data`` keeps the numbers behind it for ``--json``."""

    id: str
    what: str
    measured: str
    target: str
    met: bool | None
    data: dict[str, Any] = field(default_factory=dict)


def parse_target(target: str) -> tuple[str, float] | None:
    """``"≤ 1.10×"`` -> ``("<=", 1.1)``; None when the text names no comparison."""
    match = _TARGET.match(target)
    if match is None:
        return None
    return COMPARISONS[match.group(1)], float(match.group(2))


def compare(value: float, op: str, bound: float) -> bool:
    """Whether ``value op bound`` holds."""
    return {"<=": value <= bound, "<": value < bound, ">=": value >= bound,
            ">": value > bound}[op]


def meets(measured: float | str | None, target: str) -> bool | None:
    """Whether a measurement (a number, or text starting with one) meets ``target``; None
    when either side carries no number or comparison (then the table shows ``-``)."""
    parsed = parse_target(target)
    if parsed is None or measured is None:
        return None
    if isinstance(measured, str):
        number = _NUMBER.search(measured)
        if number is None:
            return None
        measured = float(number.group())
    return compare(float(measured), *parsed)


def ratio_row(id: str, what: str, ratio: float, op: str, bound: float, detail: str,
              **data: Any) -> Row:
    """A measured ratio against a bound: ``1.04× (fw 35.1 / bare 33.8 ms)`` vs ``≤ 1.10×``."""
    symbol = {"<=": "≤", ">=": "≥"}.get(op, op)
    return Row(id, what, f"{ratio:.2f}× ({detail})", f"{symbol} {bound:.2f}×",
               compare(ratio, op, bound), {"ratio": ratio, **data})


def extra_rows(path: Path) -> list[Row]:
    """Rows from a JSON list (or ``{"rows": [...]}``) of ``{"id", "what", "measured",
    "target"}`` objects; an explicit ``"met"`` wins over the parsed comparison."""
    raw = json.loads(Path(path).read_text())
    items = raw["rows"] if isinstance(raw, dict) else raw
    rows = []
    for item in items:
        missing = {"id", "what", "measured", "target"} - set(item)
        if missing:
            raise ValueError(f"{path}: row {item!r} lacks {sorted(missing)}")
        measured, target = item["measured"], str(item["target"])
        met = item["met"] if "met" in item else meets(measured, target)
        rows.append(Row(str(item["id"]), str(item["what"]), str(measured), target, met,
                        {k: v for k, v in item.items()
                         if k not in {"id", "what", "measured", "target", "met"}}))
    return rows


def met_text(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "no")


def print_table(rows: Sequence[Row], title: str, console: Console | None = None) -> None:
    """The table on the console (rich)."""
    table = Table(title=title, title_justify="left")
    for name, justify in (("id", "left"), ("what", "left"), ("measured", "right"),
                          ("target", "right"), ("met", "center")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        met = met_text(row.met)
        style = {"yes": "green", "no": "bold red"}.get(met, "")
        table.add_row(row.id, row.what, row.measured, row.target,
                      f"[{style}]{met}[/]" if style else met)
    if console is None:
        console = Console()
        if not console.is_terminal:  # a log file or a pipe: do not wrap at 80 columns
            console = Console(width=130)
    console.print(table)


def markdown_table(rows: Iterable[Row]) -> str:
    """The same table in Markdown (``experiments/performance.md``)."""
    lines = ["| id | what | measured | target | met |", "|---|---|---:|---:|:---:|"]
    for row in rows:
        cells = [row.id, row.what, row.measured, row.target, met_text(row.met)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def rows_json(rows: Iterable[Row]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]
