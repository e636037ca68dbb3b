"""``python -m unlearn.bench``: measure the performance ratios, print one table, record it.

    python -m unlearn.bench [hydra overrides] [--only p1,p2,p4] [--repeats 4]
                            [--extra rows.json ...] [--json out.json] [--out report.md]

A full run (every part) rewrites the generated block of ``experiments/performance.md``;
``--only`` runs write no report unless ``--out`` names one. Rows measured elsewhere join the
table from ``--extra`` files (default: ``experiments/performance_runs.json`` when present).
Exit status 1 when the batched and one-at-a-time evaluations disagree.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from unlearn.bench.eval_speed import EvaluationMismatch, eval_speed_rows
from unlearn.bench.memory import memory_rows, memory_table
from unlearn.bench.report import generated, machine, write_report
from unlearn.bench.step_time import own_scope_rows, step_time_rows
from unlearn.bench.table import Row, extra_rows, print_table, rows_json
from unlearn.bench.world import load_world

PARTS: tuple[str, ...] = ("p1", "p2", "p4")
ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "experiments" / "performance.md"
RUNS = ROOT / "experiments" / "performance_runs.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m unlearn.bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (model=..., data...)")
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated parts of {','.join(PARTS)}")
    parser.add_argument("--repeats", type=int, default=4,
                        help="timed rounds per comparison, after one warm-up round")
    parser.add_argument("--steps", type=int, default=2, help="optimiser steps per P4 case")
    parser.add_argument("--extra", type=Path, action="append",
                        help="JSON rows measured elsewhere (repeatable)")
    parser.add_argument("--json", type=Path, help="also write rows and details here")
    parser.add_argument("--out", type=Path, help="Markdown report to update "
                        f"(default for a full run: {REPORT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    args.only = [p.strip().lower() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(args.only) - set(PARTS))
    if unknown or args.repeats < 1:
        parser.error(f"--only takes {','.join(PARTS)} (got {unknown}); --repeats >= 1")
    if args.extra is None:
        args.extra = [RUNS] if RUNS.exists() else []
    if args.out is None and set(args.only) == set(PARTS):
        args.out = REPORT
    return args


def main(argv: list[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # per-fit banners
    command = " ".join(["python -m unlearn.bench", *(argv if argv is not None else sys.argv[1:])])
    meta, start = machine(), time.time()
    torch.manual_seed(0)
    rows: list[Row] = []
    memory: list[dict[str, Any]] = []
    failure = None
    parts = meta["seconds"] = {}
    if "p1" in args.only:
        rows += step_time_rows(args.overrides, args.repeats)
        rows += own_scope_rows(args.overrides, args.repeats)
        parts["p1"] = round(time.time() - start)
    if {"p2", "p4"} & set(args.only):
        world = load_world(args.overrides)
        if "p2" in args.only:
            t = time.time()
            try:
                rows += eval_speed_rows(world, args.repeats)
            except EvaluationMismatch as err:
                failure = f"P2: batched and one-at-a-time evaluation differ: {err}"
                rows.append(Row("P2 eval", "evaluation, batched = one at a time", "differ",
                                "identical", False, {"error": str(err)}))
            parts["p2"] = round(time.time() - t)
        if "p4" in args.only:
            t = time.time()
            memory = memory_table(world, args.steps)
            rows += memory_rows(memory)
            parts["p4"] = round(time.time() - t)
    for path in args.extra:
        rows += extra_rows(path)
    seconds = time.time() - start
    print_table(rows, title=f"{command}  ({meta['date']}, {meta['commit'][:12]}, "
                            f"{seconds / 60:.1f} min)")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows_json(rows),
                                         "memory": memory}, indent=2))
    if args.out:
        write_report(args.out, generated(command, meta, rows, memory, seconds))
        print(f"report: {args.out}")
    if failure:
        print(failure, file=sys.stderr)
        raise SystemExit(1)
    return rows


if __name__ == "__main__":
    main()
