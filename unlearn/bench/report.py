"""``experiments/performance.md``: the command, date, commit and table of the last full run.

The generated part sits between two markers and is replaced on every write; text outside
them (a hand-written reading) is kept.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from unlearn.bench.table import Row, markdown_table
from unlearn.pipeline import git_commit

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
TITLE = "# Performance ratios (`make bench`)\n"


def machine() -> dict[str, Any]:
    """Where the numbers come from: they are ratios, but load and threads still matter."""
    return {"date": datetime.now().astimezone().isoformat(timespec="seconds"),
            "commit": git_commit(), "python": platform.python_version(),
            "torch": torch.__version__, "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def summary(rows: Sequence[Row]) -> list[str]:
    """Generated reading: how many targets are met, and what is over target (and whether a
    switch row right after it brings it within target)."""
    judged = [r for r in rows if r.met is not None]
    lines = [f"- {sum(bool(r.met) for r in judged)} of {len(judged)} targets met."]
    by_id = {r.id: r for r in rows}
    for r in judged:
        if r.met or r.id.endswith("+switch"):
            continue
        fix = by_id.get(f"{r.id} +switch")
        if fix is not None and fix.met:
            lines.append(f"- {r.id}: {r.measured} by default; `{fix.data.get('switch')}` "
                         f"brings it to {fix.measured}.")
        else:
            lines.append(f"- Over target: **{r.id}** ({r.what}): {r.measured}, target "
                         f"{r.target}.")
    return lines


def memory_details(results: Sequence[dict[str, Any]]) -> str:
    """Every P4 measurement, switches included."""
    lines = ["| method | scope | switch | reference | trainable | static MiB | peak MiB | ÷ GA |",
             "|---|---|---|---|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['method']} | {r['scope']} | {r['switch']} | {r['reference']} | "
                     f"{r['trainable']:,} | {r['static_mib']:.2f} | {r['peak_mib']:.2f} | "
                     f"{r['ratio']:.2f} |")
    return "\n".join(lines)


def generated(command: str, meta: dict[str, Any], rows: Sequence[Row],
              memory: Sequence[dict[str, Any]], seconds: float) -> str:
    """The generated block: provenance, the table, the generated reading, memory details."""
    parts = [
        BEGIN,
        f"`{command}` — {meta['date']}, commit `{meta['commit']}`, {seconds / 60:.1f} min "
        f"({', '.join(f'{k} {v} s' for k, v in meta.get('seconds', {}).items())}); "
        f"{meta['cpus']} CPUs, torch {meta['torch']} ({meta['torch_threads']} threads, "
        f"OMP_NUM_THREADS={meta['omp_num_threads']}), load average at start "
        f"{meta['load_average'][0]}.",
        "", markdown_table(rows), "", *summary(rows),
    ]
    if memory:
        parts += ["", "P4, every measurement (÷ GA = peak ÷ GA's default peak in the scope):",
                  "", memory_details(memory)]
    return "\n".join([*parts, END]) + "\n"


def write_report(path: Path, block: str) -> None:
    """Replace the generated block of ``path`` (create the file if needed)."""
    path = Path(path)
    text = path.read_text() if path.exists() else TITLE + "\n" + BEGIN + "\n" + END + "\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + "\n\n" + BEGIN + "\n" + END + "\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1].lstrip("\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(head + block + ("\n" + tail if tail else ""))
