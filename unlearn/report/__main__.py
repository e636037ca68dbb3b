"""``python -m unlearn.report <multirun dir> [more dirs] [--experiment NAME] [--out DIR]
[--page]``: the experiment's table, CSV and plots (docs/experiments.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from unlearn.errors import UserError
from unlearn.report.render import report, write_page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unlearn.report", description=__doc__)
    parser.add_argument("multiruns", nargs="+", type=Path,
                        help="multirun directories (several: one table from all their jobs)")
    parser.add_argument("--experiment", help="render with conf/experiment/NAME.yaml's report "
                        "block instead of the one the jobs ran with")
    parser.add_argument("--out", type=Path, help="output folder (default: <first dir>/report)")
    parser.add_argument("--page", action="store_true",
                        help="also write experiments/<name>.md with this report")
    args = parser.parse_args(argv)
    try:
        spec, body, out = report(args.multiruns, args.experiment, args.out)
    except (UserError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"report: {out / spec.name}.md, {out / spec.name}.csv")
    if args.page:
        print(f"page: {write_page(spec, body, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
