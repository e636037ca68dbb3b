"""The run directory: resolved config, metrics.json, generations.jsonl, manifest, the table."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from unlearn.errors import UserError

Metrics = Mapping[str, Mapping[str, Mapping[str, float]]]
MODALITY_LABELS = {"image_text": "image+text", "text_only": "text-only"}


class RunDirExistsError(UserError, FileExistsError):
    """The run directory already holds results."""


def claim_run_dir(run_dir: Path) -> None:
    """Refuse to write into a directory that already holds results."""
    if (run_dir / "metrics.json").exists():
        raise RunDirExistsError(f"{run_dir} already holds metrics.json; results are never "
                              "overwritten: choose another hydra.run.dir")
    run_dir.mkdir(parents=True, exist_ok=True)


def write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_jsonl(path: Path, rows: Iterable[Mapping]) -> None:
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")


def write_config(run_dir: Path, cfg: DictConfig) -> None:
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def results_table(results: Mapping[str, Metrics], columns: Mapping[str, str], title: str = "",
                  stages: tuple[str, ...] = ("base", "unlearned"), caption: str = "") -> Table:
    """One row per split x modality; for each metric of ``columns`` (metric -> label: the
    ``eval.table`` of the benchmark) the values of ``stages`` (base -> unlearned)."""
    stages = tuple(s for s in stages if s in results)
    caption = caption or " → ".join(stages)
    table = Table(title=title or None, caption=caption)
    table.add_column("split", no_wrap=True)
    table.add_column("modality", no_wrap=True)
    for label in columns.values():
        table.add_column(label, justify="right", no_wrap=True)
    first = results[stages[0]]
    for split, by_mod in first.items():
        for modality in by_mod:
            values = [[results[s].get(split, {}).get(modality, {}).get(metric)
                       for s in stages] for metric in columns]
            if all(v is None for row in values for v in row):
                continue  # no item of this split has this modality (CLEAR's real faces)
            cells = [" → ".join("-" if v is None else f"{v:.3f}" for v in row) for row in values]
            table.add_row(split, MODALITY_LABELS.get(modality, modality), *cells)
    return table


def print_results(results: Mapping[str, Metrics], columns: Mapping[str, str], title: str = ""
                  ) -> None:
    console = Console()
    console.width = max(console.width, 110)  # never wrap the table, even when piped
    console.print(results_table(results, columns, title))
    stages = [s for s in ("base", "unlearned") if s in results.get("summary", {})]
    for key in ("forget_quality", "model_utility"):
        values = [results["summary"][s].get(key) for s in stages]
        if any(v is not None for v in values):
            console.print(f"{key.replace('_', ' ')}: "
                          + " → ".join("-" if v is None else f"{v:.4g}" for v in values))


def print_relearn(relearn: Mapping, columns: Mapping[str, str], title: str = "") -> None:
    """The relearning attack: before -> after on the held-out forget questions, the average
    accuracy gain AG, and the same for the never-trained control when it ran."""
    console = Console()
    console.width = max(console.width, 110)
    for label, entry in (("unlearned model", relearn), ("never-trained control",
                                                         relearn.get("control"))):
        if not entry:
            continue
        console.print(results_table(entry, columns, f"{title}: {label}",
                                    stages=("before", "after"),
                                    caption="before → after relearning, held-out forget people"))
        average = entry.get("average_gain")
        console.print(f"{label}: average accuracy gain AG = "
                      + ("-" if average is None else f"{average:+.3f}"))
