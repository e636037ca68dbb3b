"""Forget vs utility trade-off plots (Vgid Figure 4, MMUnlearner Figure 4) from table rows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, also on a machine without a display
import matplotlib.pyplot as plt  # noqa: E402

from unlearn.report.runs import OK  # noqa: E402
from unlearn.report.spec import Axis, Plot, Spec  # noqa: E402
from unlearn.report.table import Row, _label, percent  # noqa: E402

AXIS_TEXT = {"value": "{}", "delta": "change in {} (unlearned − base)",
             "reduction": "reduction in {} (base − unlearned)"}


def coordinate(row: Row, axis: Axis) -> float | None:
    """The row's value on an axis; a base row sits at zero change."""
    result = row.cells.get(axis.cell)
    if result is None or result.value is None:
        return None
    scale = 100.0 if percent(axis.cell.metric) else 1.0
    if axis.change == "value":
        return result.value.mean * scale
    delta = 0.0 if row.kind == "base" else (result.delta.mean if result.delta else None)
    if delta is None:
        return None
    return (delta if axis.change == "delta" else -delta) * scale


def _sortable(tag: str) -> tuple[int, float | str]:
    """Numbers (forget ratios) in numeric order, other tags after them in text order."""
    try:
        return 0, float(tag)
    except ValueError:
        return 1, tag


def _axis_text(axis: Axis) -> str:
    unit = " (%)" if percent(axis.cell.metric) else ""
    name = f"{axis.cell.split} {axis.cell.modality} {axis.cell.metric}{unit}"
    return AXIS_TEXT[axis.change].format(name)


def draw(spec: Spec, plot: Plot, keys: Sequence[str], rows: Sequence[Row], path: Path) -> bool:
    """One panel per (group of the non-treatment keys, y axis); False when nothing to draw."""
    others = [k for k in keys if k not in spec.treatment and k != plot.line]
    usable = [r for r in rows if r.status == OK]
    groups: dict[tuple, list[Row]] = {}
    for row in usable:
        groups.setdefault(tuple(row.keys[k] for k in others), []).append(row)
    if not groups:
        return False
    fig, axes = plt.subplots(len(groups), len(plot.y), squeeze=False,
                             figsize=(max(6.0, 4.2 * len(plot.y)), 3.6 * len(groups)))
    colours: dict[str, str] = {}
    for gi, (group, members) in enumerate(groups.items()):
        for yi, y in enumerate(plot.y):
            ax = axes[gi][yi]
            series: dict[str, list[tuple[float, float, str]]] = {}
            for row in members:
                px, py = coordinate(row, plot.x), coordinate(row, y)
                if px is None or py is None:
                    continue
                tag = _label(spec, plot.line, row.keys.get(plot.line)) if plot.line else ""
                series.setdefault(row.label, []).append((px, py, tag))
            for label, points in series.items():
                colour = "black" if label == spec.base_label else colours.setdefault(
                    label, f"C{len(colours) % 10}")
                points.sort(key=lambda p: _sortable(p[2]))
                xs, ys = [p[0] for p in points], [p[1] for p in points]
                ax.plot(xs, ys, "-o" if plot.line else "o", color=colour, label=label,
                        markersize=5)
                for px, py, tag in points:
                    if tag:
                        ax.annotate(tag, (px, py), fontsize=7, xytext=(3, 3),
                                    textcoords="offset points")
            ax.set_xlabel(_axis_text(plot.x), fontsize=8)
            ax.set_ylabel(_axis_text(y), fontsize=8)
            title = " ".join(_label(spec, k, v) for k, v in zip(others, group, strict=True) if v)
            ax.set_title(title, fontsize=9)
            ax.grid(alpha=0.3)
    handles = {h.get_label(): h for ax in axes.flat for h in ax.get_lines()}
    if not handles:  # no row has both cells (e.g. the metric was not evaluated)
        plt.close(fig)
        return False
    fig.legend(list(handles.values()), list(handles), loc="lower center",
               ncol=min(len(handles), 6), fontsize=8, frameon=False)
    fig.suptitle(plot.title, fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
