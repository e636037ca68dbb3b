"""Where a saliency mask selects parameters: fractions per group, module type and layer, and a
heatmap in the manner of MMUnlearner's Figure 5 (layer × module type, colour = density)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from unlearn.models.modules import group_of

LAYER = re.compile(r"\.(?:layers|blocks)\.(\d+)\.")
ATTENTION = re.compile(r"\.(?:self_attn|attn)\.")
COLUMNS: tuple[str, ...] = ("vision attention", "vision mlp", "projector",
                            "language attention", "language mlp")


def module_type(name: str, group: str) -> str:
    """``<group> attention|mlp|other``; the projector and unclaimed parameters are one type."""
    if group in ("projector", "other"):
        return group
    if ATTENTION.search(name):
        return f"{group} attention"
    if ".mlp." in name:
        return f"{group} mlp"
    return f"{group} other"  # embeddings, norms, lm_head, patch embedding


def _fraction(selected: int, total: int) -> dict[str, float | int]:
    return {"selected": selected, "total": total, "fraction": round(selected / total, 6)}


def density(masks: Mapping[str, torch.Tensor], groups: Mapping[str, list[str]]) -> dict[str, Any]:
    """Selected/total elements overall, per group and per module type, plus the fraction per
    (module type, layer) that :func:`plot_density` draws."""
    counts: dict[str, dict[str, list[int]]] = {"group": defaultdict(lambda: [0, 0]),
                                               "type": defaultdict(lambda: [0, 0])}
    layers: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for name, m in masks.items():
        group = group_of(name, groups)
        kind = module_type(name, group)
        sel, tot = int(m.sum()), m.numel()
        for table, key in ((counts["group"], group), (counts["type"], kind)):
            table[key][0] += sel
            table[key][1] += tot
        layer = LAYER.search(name)
        if layer and kind in COLUMNS:
            cell = layers[kind][int(layer.group(1))]
            cell[0] += sel
            cell[1] += tot
    selected = sum(s for s, _ in counts["group"].values())
    total = sum(t for _, t in counts["group"].values())
    return {
        **_fraction(selected, total),
        "by_group": {k: _fraction(*v) for k, v in sorted(counts["group"].items())},
        "by_type": {k: _fraction(*v) for k, v in sorted(counts["type"].items())},
        "by_layer": {kind: {i: round(s / t, 6) for i, (s, t) in sorted(cells.items())}
                     for kind, cells in layers.items()},
    }


def plot_density(stats: Mapping[str, Any], path: Path, title: str = "") -> Path:
    """Heatmap of the selected fraction per layer (rows) and module type (columns); the
    projector, having no layers, is drawn in row 0. Blank cells hold no trainable weights."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    by_layer = {k: dict(v) for k, v in stats["by_layer"].items()}
    if "projector" in stats["by_type"]:
        by_layer["projector"] = {0: stats["by_type"]["projector"]["fraction"]}
    n_layers = 1 + max((int(i) for cells in by_layer.values() for i in cells), default=0)
    grid = np.full((n_layers, len(COLUMNS)), np.nan)
    for j, kind in enumerate(COLUMNS):
        for i, value in by_layer.get(kind, {}).items():
            grid[int(i), j] = value
    fig, ax = plt.subplots(figsize=(7, 1.5 + 0.35 * n_layers))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value) and n_layers <= 40:
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if value > 0.6 else "black")
    ax.set_xticks(range(len(COLUMNS)), [c.replace(" ", "\n") for c in COLUMNS], fontsize=8)
    ax.set_ylabel("layer")
    ax.set_title(title or f"selected fraction {stats['fraction']:.3f}", fontsize=9)
    fig.colorbar(image, ax=ax, label="fraction with mask = 1")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
