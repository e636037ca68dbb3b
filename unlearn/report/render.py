"""Render an experiment's report (markdown, CSV, plots) and its experiments page."""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from omegaconf import OmegaConf

from unlearn.report.plots import draw
from unlearn.report.runs import OK, REPORT_DIR, Job, load_jobs
from unlearn.report.spec import Spec, parse_report
from unlearn.report.table import (
    ROOT,
    Row,
    attach_paper,
    build_rows,
    csv_text,
    markdown,
    paper_reference,
)

CONF = ROOT / "conf"
PAGES = ROOT / "experiments"
BEGIN, END = "<!-- report:begin -->", "<!-- report:end -->"


def experiment_spec(name: str) -> Spec:
    """The report block of ``conf/experiment/<name>.yaml``."""
    path = CONF / "experiment" / f"{name}.yaml"
    if not path.exists():
        options = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise FileNotFoundError(f"experiment {name!r} not found; options: {options}")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"+experiment={name}"])
    if "report" not in cfg:
        raise ValueError(f"experiment {name!r} has no report block")
    return parse_report(cfg.report)


def jobs_spec(jobs: Sequence[Job]) -> Spec:
    """The report block the jobs ran with (the first job that recorded one)."""
    for job in jobs:
        block = OmegaConf.select(job.config, "report", default=None)
        if block is not None:
            return parse_report(block)
    raise ValueError("no job of these multiruns has a report block; pass --experiment NAME")


def _commits(jobs: Sequence[Job]) -> str:
    commits = sorted({j.manifest.get("git_commit", "?") for j in jobs if j.manifest})
    return ", ".join(f"`{c[:12]}{'+dirty' if c.endswith('+dirty') else ''}`"
                     for c in commits) or "unknown"


def _runs_summary(jobs: Sequence[Job]) -> str:
    bad = [j for j in jobs if j.status != OK]
    text = f"{len(jobs)} job(s), {len(jobs) - len(bad)} finished"
    if bad:
        text += "; " + "; ".join(f"job {j.num} {j.status}" for j in bad)
    return text


def render(spec: Spec, jobs: Sequence[Job], out: Path, sources: Sequence[Path]) -> str:
    """Write ``<out>/<name>.md``, ``.csv`` and the plots; return the markdown body (the part
    an experiments page embeds)."""
    out.mkdir(parents=True, exist_ok=True)
    keys, rows = build_rows(spec, jobs)
    records = attach_paper(spec, rows)
    reference = paper_reference(spec, records, rows)
    spec = _filled_columns(spec, rows)
    date = dt.date.today().isoformat()
    body = [f"### {spec.title}", "",
            f"Report of {date}, code at commit {_commits(jobs)}; {_runs_summary(jobs)}; "
            f"from {', '.join(f'`{s}`' for s in sources)}. Cells: mean over items "
            f"[95 % bootstrap interval, {spec.resamples} resamples, seed {spec.seed}]; "
            "accuracies in %, ROUGE/BLEU as scores. A `↳ paper` row holds the paper's number "
            "where its model and setting match ours.", ""]
    if spec.note:
        body += [spec.note, ""]
    body.append(markdown(spec, keys, rows, reference))
    for plot in spec.plots:
        png = out / f"{spec.name}_{plot.name}.png"
        if draw(spec, plot, keys, rows, png):
            body += ["", f"![{plot.title}]({png.name})"]
    if spec.masks:
        body += ["", _masks(spec, jobs, out)]
    text = "\n".join(body) + "\n"
    _atomic_write(out / f"{spec.name}.md", text)
    _atomic_write(out / f"{spec.name}.csv", csv_text(spec, keys, rows))
    return text


def _filled_columns(spec: Spec, rows: Sequence[Row]) -> Spec:
    """The layout without the columns that no row fills, ours or the paper's (a product of
    splits x modalities x metrics has cells a benchmark never asks: CLEAR's real faces are
    image+text choice only)."""
    kept = tuple(c for c in spec.columns if any(
        c in row.cells and (row.cells[c].value is not None or row.cells[c].paper is not None)
        for row in rows))
    return replace(spec, columns=kept) if kept else spec


def _masks(spec: Spec, jobs: Sequence[Job], out: Path) -> str:
    """Each job's saliency-mask density (MMUnlearner Figure 5's view) and selected share."""
    lines = ["Saliency masks (fraction of trainable parameters selected; density per layer "
             "and module type in the images):", "", "| job | method | scope | selected |",
             "|---|---|---|---|"]
    images = []
    for job in jobs:
        mask = job.manifest.get("mask")
        if not mask:
            continue
        lines.append(f"| {job.num} | {job.value('method.name')} | "
                     f"{job.value('trainable_modules.scope')} | {mask.get('fraction', '?')} |")
        png = job.path / "mask_density.png"
        if png.exists():
            name = f"{spec.name}_mask_{job.num}.png"
            shutil.copyfile(png, out / name)
            images.append(f"![mask density, job {job.num}]({name})")
    if len(lines) == 4:
        return "No job of this multirun recorded a saliency mask."
    return "\n".join(lines + [""] + images)


def _atomic_write(path: Path, text: str) -> None:
    """Concurrent jobs (a parallel launcher) may render at once: readers never see half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def report(multiruns: Sequence[Path], experiment: str | None = None,
           out: Path | None = None) -> tuple[Spec, str, Path]:
    """Render the report of one or more multirun directories; returns the spec, the body
    and the output folder (default ``<first multirun>/report``)."""
    jobs = load_jobs(multiruns)
    if not jobs:
        raise FileNotFoundError(f"no job directories in {[str(m) for m in multiruns]}")
    spec = experiment_spec(experiment) if experiment else jobs_spec(jobs)
    out = out or Path(multiruns[0]) / REPORT_DIR
    return spec, render(spec, jobs, out, multiruns), out


def page_header(spec: Spec) -> str:
    return "\n".join([
        f"# {spec.title}", "",
        "Generated by `python -m unlearn.report <multirun dir> --page` between the markers "
        "below; the reading after them is kept.", "", "```bash",
        f"python -m unlearn -m +experiment={spec.name}                      # tiny default",
        f"python -m unlearn -m +experiment={spec.name} model=llava7b data=mllmu_bench "
        "trainer=gpu   # full scale",
        f"python -m unlearn.report outputs/multirun/<date>/   # (re)render; --page updates "
        f"experiments/{spec.name}.md", "```", "", *([spec.note, ""] if spec.note else [])])


def write_page(spec: Spec, body: str | None, out: Path | None, pages: Path = PAGES) -> Path:
    """``experiments/<name>.md``: the header and the report between the markers are
    generated; the reading below the end marker is kept as written."""
    path = pages / f"{spec.name}.md"
    reading = "\n\n## Reading\n\n(none yet)\n"
    if path.exists() and END in path.read_text():
        reading = path.read_text().split(END, 1)[1]
    if body is None:
        body = "No run recorded yet: run the first command above, then the report.\n"
    else:
        images = sorted(out.glob(f"{spec.name}*.png")) if out else []
        for png in images:  # pages link their own copy: multirun folders are not committed
            shutil.copyfile(png, pages / png.name)
    text = f"{page_header(spec)}\n{BEGIN}\n{body.rstrip()}\n{END}{reading}"
    _atomic_write(path, text)
    return path
