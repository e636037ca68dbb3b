"""``python -m unlearn.plan [overrides]``: per-GPU memory of a training step, before anything
is downloaded, and whether it fits ``plan.gpu_gb``.

    python -m unlearn.plan model=llava7b method=vgid trainer=fsdp trainer.devices=4
    python -m unlearn.plan model=qwen2vl7b trainable_modules=all plan.gpu_gb=40

The overrides are those of ``python -m unlearn``; ``plan.*`` (conf/plan/default.yaml) sets
the GPU size, the strategy and the sequence lengths. Exit status 1 on a bad input.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from unlearn.errors import UserError
from unlearn.plan import GIB, Plan, plan

CONF = str(Path(__file__).resolve().parents[2] / "conf")


def compose_plan(overrides: Sequence[str]) -> DictConfig:
    """The root config as ``python -m unlearn`` composes it, plus the ``plan`` node, checked
    like a run's (unlearn.config.validate)."""
    from unlearn.config import validate

    overrides = list(overrides)
    if not any(o.lstrip("+~").startswith("plan=") for o in overrides):
        overrides.append("+plan=default")
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    validate(cfg)
    return cfg


def gib(value: float) -> str:
    return f"{value / GIB:,.2f}"


def table(p: Plan) -> Table:
    """Components, the peak, and the verdict against the GPU."""
    out = Table(title=p.title, title_justify="left")
    out.add_column("component")
    out.add_column("GiB / GPU", justify="right")
    out.add_column("in peak", justify="center")
    out.add_column("what")
    for row in p.rows:
        out.add_row(row.name, gib(row.bytes), "x" if row.in_peak else "", row.note)
    out.add_section()
    out.add_row("peak (tensors)", gib(p.peak), "", f"the rows marked x, at {p.phase}")
    out.add_row("reserve", gib(p.reserve), "", "CUDA context, NCCL, allocator (plan.reserve_gb)")
    out.add_row("total", gib(p.total), "", "")
    margin = p.gpu - p.total
    verdict = "[green]yes[/green]" if p.fits else "[red]no[/red]"
    out.add_row(f"fits {p.gpu / GIB:g} GiB", verdict, "",
                f"margin {'+' if margin >= 0 else '-'}{gib(abs(margin))} GiB")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # peft asks transformers 5 a deprecated property when it wraps a model: not ours to fix
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated")
    console = Console()
    try:
        result = plan(compose_plan(args))
    except (UserError, HydraException) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    console.print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
