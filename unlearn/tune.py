"""Pick a method's tiny-world hyperparameters from a sweep (``python -m unlearn.tune DIR...``).

The papers' values are 7B values; a tiny model trained from scratch needs its own. The rule,
applied per method to the jobs of one or more multirun directories:

- forget drop = base − unlearned, averaged over the forget split's image+text multiple-choice
  and cloze accuracy (what the benchmark's forget columns report);
- retain drop = the same on the retain split, averaged over image+text and text-only;
- choose the largest forget drop among the jobs whose retain drop is at most ``--bound``
  (default 0.10); ties go to the smaller learning rate, then the fewer epochs. A method with no
  job inside the bound is reported as such, never given a value.

The chosen values go into the method's YAML as ``${scaled:PAPER,TINY}`` (``unlearn/resolvers.py``).
Jobs without ``metrics.json`` (failed, diverged) are listed as such.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

FORGET = (("forget", "image_text", "class_acc"), ("forget", "image_text", "cloze_acc"))
RETAIN = tuple(("retain", m, k) for m in ("image_text", "text_only")
               for k in ("class_acc", "cloze_acc"))


@dataclass(frozen=True)
class Job:
    """One sweep job: its method, values, and drops (None when it wrote no results)."""

    path: Path
    method: str
    lr: float
    epochs: int
    forget_drop: float | None
    retain_drop: float | None


def _drop(metrics: dict, cells: tuple) -> float:
    return sum(metrics["base"][s][m][k] - metrics["unlearned"][s][m][k]
               for s, m, k in cells) / len(cells)


def read_job(path: Path) -> Job:
    """A job directory (``config.yaml`` + ``metrics.json``) → its drops."""
    cfg = OmegaConf.load(path / "config.yaml")
    lr, epochs = float(cfg.method.optim.lr), int(cfg.method.epochs)
    metrics_file = path / "metrics.json"
    if not metrics_file.is_file():
        return Job(path, str(cfg.method.name), lr, epochs, None, None)
    metrics = json.loads(metrics_file.read_text())
    return Job(path, str(cfg.method.name), lr, epochs, _drop(metrics, FORGET),
               _drop(metrics, RETAIN))


def choose(jobs: list[Job], bound: float) -> dict[str, Job | None]:
    """Per method, the job the rule picks (None: no finished job within the bound)."""
    out: dict[str, Job | None] = {}
    for method in sorted({j.method for j in jobs}):
        ok = [j for j in jobs if j.method == method and j.retain_drop is not None
              and j.retain_drop <= bound + 1e-12]
        ok.sort(key=lambda j: (-round(j.forget_drop, 9), j.lr, j.epochs))
        out[method] = ok[0] if ok else None
    return out


def table(jobs: list[Job], chosen: dict[str, Job | None]) -> str:
    """Every job as a markdown row, the chosen one marked."""
    rows = ["| method | lr | epochs | forget drop | retain drop | chosen |",
            "|---|---:|---:|---:|---:|:---:|"]
    for j in sorted(jobs, key=lambda j: (j.method, j.lr, j.epochs)):
        if j.forget_drop is None:
            rows.append(f"| {j.method} | {j.lr:g} | {j.epochs} | failed | failed | |")
            continue
        mark = "**yes**" if chosen.get(j.method) == j else ""
        rows.append(f"| {j.method} | {j.lr:g} | {j.epochs} | {j.forget_drop:+.3f} | "
                    f"{j.retain_drop:+.3f} | {mark} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m unlearn.tune",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="multirun directories")
    parser.add_argument("--bound", type=float, default=0.10, help="largest retain drop allowed")
    args = parser.parse_args(argv)
    jobs = [read_job(p.parent) for d in args.dirs for p in sorted(d.glob("*/config.yaml"))]
    chosen = choose(jobs, args.bound)
    print(table(jobs, chosen))
    print()
    for method, job in chosen.items():
        if job is None:
            print(f"{method}: no job within a retain drop of {args.bound}")
        else:
            print(f"{method}: lr {job.lr:g}, epochs {job.epochs}")


if __name__ == "__main__":
    main()
