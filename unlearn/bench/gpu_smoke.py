"""``python -m unlearn.bench.gpu_smoke`` (``make gpu-smoke``): every method on each tiny family
under each GPU strategy, end to end, as a table of ok / refused / failed, seconds and peak GPU
memory.

    python -m unlearn.bench.gpu_smoke [--families tiny_llava,...] [--methods ga,npo,...]
                                      [--strategies gpu,fsdp,fsdp:4] [--timeout 600]
                                      [--work outputs/gpu_smoke] [--out experiments/gpu_smoke.md]

A strategy is a ``conf/trainer`` option, with ``:N`` for N devices; a GPU trainer without a
count runs on one device (``fsdp`` = FSDP on one GPU), and always in bf16. Each cell is one
``python -m unlearn`` process in a reduced world (the matrix test's), with one ``paths.root``
per family so that the family's first cell builds the vanilla model and base evaluation and
the others reuse them. Peak GPU memory is the run's own ``manifest.json["peak_gpu_bytes"]``.
Without CUDA the defaults are ``cpu,fsdp_cpu`` (a rehearsal of the tool) and no page is
written unless ``--out`` names one. Exit status 1 when a cell failed or timed out (a method
that FSDP refuses at start is "refused", which is expected).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from unlearn.bench.report import BEGIN, END, write_report
from unlearn.errors import UserError
from unlearn.pipeline import git_commit

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
REPORT = ROOT / "experiments" / "gpu_smoke.md"
TITLE = "# GPU smoke check (`make gpu-smoke`)\n"
FAMILIES: tuple[str, ...] = ("tiny_llava", "tiny_qwen2vl", "tiny_qwen25vl")
# the reduced world (also tests/test_family_matrix.py's): 4 profiles, one epoch, short
# generations, two eval splits
SMALL: tuple[str, ...] = (
    "data.synthetic.num_profiles=4", "data.synthetic.num_celebrities=1",
    "data.synthetic.num_facts=4", "data.synthetic.test_views=1", "model.tiny.size=tiny",
    "model.vanilla.shipped=false", "model.vanilla.epochs=1",
    "model.vanilla.mcq_warmup.steps=1", "model.vanilla.mcq_warmup.batch_size=4",
    "method.epochs=1", "eval.splits=[forget,retain]",
    "eval.max_new_tokens.classification=4", "eval.max_new_tokens.cloze=8",
    "eval.max_new_tokens.generation=12", "logger=none",
)
# the one line ``python -m unlearn`` prints for a UserError, and an exception's last line
_ERROR = re.compile(r"^error: (.*)$")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b.*$")
_FSDP = re.compile(r"\bFSDP\b")  # every unlearn.fsdp.FSDPError names FSDP


def methods() -> list[str]:
    """Every ``conf/method`` option."""
    return sorted(p.stem for p in (CONF / "method").glob("*.yaml"))


def trainer_options() -> list[str]:
    return sorted(p.stem for p in (CONF / "trainer").glob("*.yaml"))


def default_strategies(cuda_devices: int) -> list[str]:
    """GPU, then FSDP on one GPU and on all of them; without CUDA the CPU pair."""
    if cuda_devices < 1:
        return ["cpu", "fsdp_cpu"]
    return ["gpu", "fsdp", *([f"fsdp:{cuda_devices}"] if cuda_devices > 1 else [])]


def strategy_overrides(strategy: str) -> list[str]:
    """Trainer overrides of ``name`` or ``name:N``: a GPU trainer gets one device unless N
    says more, and bf16 where its config has another precision."""
    name, _, count = strategy.partition(":")
    if name not in trainer_options():
        raise UserError(f"strategy {strategy!r}: no conf/trainer/{name}.yaml (expected one of "
                        f"{', '.join(trainer_options())}, optionally with :N devices)")
    if count and not (count.isdigit() and int(count) >= 1):
        raise UserError(f"strategy {strategy!r}: the device count after ':' must be an "
                        f"integer >= 1, got {count!r}")
    trainer = OmegaConf.load(CONF / "trainer" / f"{name}.yaml")
    overrides = [f"trainer={name}"]
    gpu = trainer.accelerator == "gpu"
    if count or gpu:
        overrides.append(f"trainer.devices={count or 1}")
    if gpu and not str(trainer.precision).startswith("bf16"):
        overrides.append("trainer.precision=bf16-mixed")
    return overrides


@dataclass(frozen=True)
class Cell:
    """One family × method × strategy run."""

    family: str
    method: str
    strategy: str

    @property
    def slug(self) -> str:
        return f"{self.method}_{self.strategy.replace(':', 'x')}"

    def overrides(self, work: Path, run_dir: Path) -> list[str]:
        return [f"paths.root={work / self.family}", f"model={self.family}",
                f"method={self.method}", *strategy_overrides(self.strategy), *SMALL,
                f"hydra.run.dir={run_dir}"]


def cells(families: Sequence[str], methods: Sequence[str], strategies: Sequence[str]
          ) -> list[Cell]:
    """Family by family (its first cell builds the caches the others read), then method,
    then strategy."""
    return [Cell(f, m, s) for f in families for m in methods for s in strategies]


@dataclass
class Result:
    """What a cell came to: ``detail`` is the refusal text or the failure's last error line."""

    cell: Cell
    status: str  # ok | refused | failed | timeout
    seconds: float
    peak_gpu_bytes: int | None = None
    detail: str = ""


def error_line(output: str) -> tuple[str, bool]:
    """The line that says why a run stopped, and whether it is a UserError's: the last
    ``error: ...`` line, else an exception's last line, else the last line printed."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [m.group(1) for m in map(_ERROR.match, lines) if m]
    if errors:
        return errors[-1], True
    exceptions = [line for line in lines if _EXCEPTION.match(line)]
    return (exceptions or lines or [""])[-1], False


def classify(returncode: int | None, output: str) -> tuple[str, str]:
    """(status, detail) of a finished process (``returncode`` None: killed at the timeout).
    A UserError naming FSDP is a refusal at start (``unlearn.fsdp.check``)."""
    if returncode is None:
        return "timeout", ""
    if returncode == 0:
        return "ok", ""
    line, user_error = error_line(output)
    if returncode == 1 and user_error and _FSDP.search(line):
        return "refused", line
    return "failed", line or f"exit status {returncode}"


def run_cell(cell: Cell, work: Path, stamp: str, timeout: float) -> Result:
    """One ``python -m unlearn`` process, its output in ``<run dir>.log``; the whole process
    group is killed at the timeout (an FSDP/DDP run has a child per extra rank)."""
    run_dir = work / cell.family / "runs" / stamp / cell.slug
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    log = run_dir.with_suffix(".log")
    start = time.time()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "unlearn", *cell.overrides(work, run_dir)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            returncode: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            returncode = None
    seconds = time.time() - start
    status, detail = classify(returncode, log.read_text(errors="replace"))
    peak = None
    if status == "ok":
        manifest = run_dir / "manifest.json"
        if not manifest.exists():
            return Result(cell, "failed", seconds, None, f"no manifest.json in {run_dir}")
        peak = json.loads(manifest.read_text()).get("peak_gpu_bytes")
    return Result(cell, status, seconds, peak, detail)


def memory_text(peak: int | None) -> str:
    """``0.8 GiB`` from 0.1 GiB up, ``35 MiB`` below; empty without a GPU measurement."""
    if peak is None:
        return ""
    return f"{peak / 2**30:.1f} GiB" if peak >= 2**30 / 10 else f"{peak / 2**20:.0f} MiB"


def cell_text(result: Result) -> str:
    """``ok 12 s 0.8 GiB`` / ``refused`` / ``FAILED`` / ``TIMEOUT``."""
    if result.status == "ok":
        return " ".join(filter(None, ["ok", f"{result.seconds:.0f} s",
                                      memory_text(result.peak_gpu_bytes)]))
    return {"refused": "refused", "failed": "FAILED", "timeout": "TIMEOUT"}[result.status]


def grid(results: Sequence[Result]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: a row per method, a column per family × strategy (in run order)."""
    columns = list(dict.fromkeys((r.cell.family, r.cell.strategy) for r in results))
    rows = list(dict.fromkeys(r.cell.method for r in results))
    by_key = {(r.cell.method, r.cell.family, r.cell.strategy): r for r in results}
    header = ["method", *(f"{family} {strategy}" for family, strategy in columns)]
    body = [[method, *(cell_text(by_key[method, family, strategy])
                       if (method, family, strategy) in by_key else ""
                       for family, strategy in columns)] for method in rows]
    return header, body


def print_table(results: Sequence[Result], title: str, console: Console | None = None) -> None:
    """``title`` on a line of its own (a long command), then the grid: failures in red,
    refusals dimmed."""
    header, body = grid(results)
    table = Table()
    for name in header:
        table.add_column(name, justify="left" if name == "method" else "right")
    styles = {"FAILED": "bold red", "TIMEOUT": "bold red", "refused": "dim"}
    for row in body:
        table.add_row(row[0], *(f"[{styles[c]}]{c}[/]" if c in styles else c for c in row[1:]))
    if console is None:
        console = Console()
        if not console.is_terminal:  # a log file or a pipe: do not wrap at 80 columns
            console = Console(width=200)
    console.print(title, markup=False, highlight=False, soft_wrap=True)
    console.print(table)


def markdown_table(results: Sequence[Result]) -> str:
    header, body = grid(results)
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def notes(results: Sequence[Result]) -> list[str]:
    """A line per cell that did not run to the end: why (refusal text or error line)."""
    return [f"- {r.cell.family} · {r.cell.method} · {r.cell.strategy}: **{r.status}**"
            + (f" — {r.detail}" if r.detail else f" after {r.seconds:.0f} s")
            for r in results if r.status != "ok"]


def device_name() -> str:
    """``NVIDIA H100 80GB HBM3`` (``4 × ...`` for several), or ``CPU``."""
    count = torch.cuda.device_count()
    if count < 1:
        return "CPU"
    name = torch.cuda.get_device_name(0)
    return f"{count} × {name}" if count > 1 else name


def page(command: str, date: str, commit: str, device: str, seconds: float,
         results: Sequence[Result]) -> str:
    """The generated block of the Markdown page: provenance, the grid, the notes."""
    ok = sum(r.status == "ok" for r in results)
    refused = sum(r.status == "refused" for r in results)
    parts = [BEGIN,
             f"`{command}` — {date}, commit `{commit}`, {device}, {seconds / 60:.1f} min; "
             f"{ok} ok, {refused} refused, {len(results) - ok - refused} failed or timed out "
             f"of {len(results)} cells.",
             "", markdown_table(results)]
    if any(r.status != "ok" for r in results):
        parts += ["", *notes(results)]
    return "\n".join([*parts, END]) + "\n"


def write_page(path: Path, block: str) -> None:
    """Replace the generated block of ``path``, creating the page with its title first."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(TITLE + "\n" + BEGIN + "\n" + END + "\n")
    write_report(path, block)


def names(text: str, known: Sequence[str] | None, what: str) -> list[str]:
    """A comma-separated list, each name checked against ``known`` when given."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if known is not None and item not in known]
    if not items or unknown:
        raise UserError(f"--{what}: unknown {unknown or 'empty list'} (expected a "
                        f"comma-separated list of {', '.join(known or [])})")
    return items


def parse_args(argv: Sequence[str] | None, cuda_devices: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m unlearn.bench.gpu_smoke",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--methods", default=",".join(methods()))
    parser.add_argument("--strategies", default=None,
                        help="trainer options, ':N' for N devices (default: gpu,fsdp and "
                             "fsdp:<all GPUs> with CUDA; cpu,fsdp_cpu without)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per cell")
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "gpu_smoke",
                        help="one paths.root per family under it (caches reused)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"Markdown page (default with CUDA: {REPORT.relative_to(ROOT)}; "
                             "none without)")
    args = parser.parse_args(argv)
    args.families = names(args.families, FAMILIES, "families")
    args.methods = names(args.methods, methods(), "methods")
    args.strategies = names(args.strategies or ",".join(default_strategies(cuda_devices)),
                            None, "strategies")
    for strategy in args.strategies:
        strategy_overrides(strategy)  # an unknown trainer fails here, before any run
    if args.timeout <= 0:
        raise UserError(f"--timeout must be > 0 seconds, got {args.timeout}")
    if args.out is None and cuda_devices > 0:
        args.out = REPORT
    return args


def main(argv: Sequence[str] | None = None) -> list[Result]:
    cuda_devices = torch.cuda.device_count()
    try:
        args = parse_args(argv, cuda_devices)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if cuda_devices < 1:
        print("no CUDA device: this is the CPU rehearsal of the GPU smoke check "
              f"(strategies {','.join(args.strategies)}); no page is written without --out")
    command = " ".join(["python -m unlearn.bench.gpu_smoke",
                        *(argv if argv is not None else sys.argv[1:])])
    date = datetime.now().astimezone().isoformat(timespec="seconds")
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    todo = cells(args.families, args.methods, args.strategies)
    start, results = time.time(), []
    for i, cell in enumerate(todo, 1):
        result = run_cell(cell, args.work.resolve(), stamp, args.timeout)
        results.append(result)
        print(f"[{i}/{len(todo)}] {cell.family} {cell.method} {cell.strategy}: "
              f"{cell_text(result)}" + (f" ({result.detail})" if result.detail else ""),
              flush=True)
    seconds = time.time() - start
    device = device_name()
    print_table(results, title=f"{command}  ({date}, {device}, {seconds / 60:.1f} min)")
    if args.out:
        write_page(args.out, page(command, date, git_commit(), device, seconds, results))
        print(f"page: {args.out}")
    if any(r.status in {"failed", "timeout"} for r in results):
        raise SystemExit(1)
    return results


if __name__ == "__main__":
    main()
