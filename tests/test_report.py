"""Experiment configs compose and sweep only existing options; the report renders a fixture
multirun (finished, diverged and killed jobs) in the paper's layout."""

import csv
import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from unlearn.callbacks import ReportOnJobEnd
from unlearn.config import validate
from unlearn.module import DivergenceError
from unlearn.report.__main__ import main as report_main
from unlearn.report.render import BEGIN, END, experiment_spec, write_page
from unlearn.report.spec import ReportSpecError, parse_report
from unlearn.report.stats import bootstrap

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
# every numeric table and figure of the two papers, and the config reproducing it
PAPER_TABLES = {
    "vgid_table1", "vgid_table2", "vgid_table3", "vgid_table4", "vgid_table4_replace",
    "vgid_table5", "vgid_table6", "vgid_table8", "vgid_table9", "vgid_figure4",
    "mmunlearner_table1", "mmunlearner_table1_clear", "mmunlearner_table2",
    "mmunlearner_figure4", "mmunlearner_figure5",
}


def make(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def test_every_paper_table_has_an_experiment_config():
    assert PAPER_TABLES <= set(EXPERIMENTS)
    assert set(EXPERIMENTS) - PAPER_TABLES == {"vkd", "tiny_values"}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_swept_value_is_an_existing_option_and_each_job_validates(name):
    cfg = make([f"+experiment={name}"])
    params = cfg.hydra.sweeper.params or {}
    assert params, name
    parser = OverridesParser.create()
    grid = {}
    for key, values in params.items():
        override = parser.parse_overrides([f"{key}={values}"])[0]
        grid[key] = (list(override.sweep_string_iterator()) if override.is_sweep_override()
                     else [override.get_value_element_as_str()])
    first = [f"{k}={v[0]}" for k, v in grid.items()]
    for key, options in grid.items():
        group = CONF / key
        for option in options:
            if group.is_dir():
                assert (group / f"{option}.yaml").exists(), f"{name}: {key}={option}"
            # the job as the sweeper builds it: the other keys at their first value
            job = make([f"+experiment={name}", *first, f"{key}={option}"])
            if not group.is_dir():
                assert str(OmegaConf.select(job, key)) == option, f"{name}: {key}={option}"
            validate(job)


@pytest.mark.parametrize("name", sorted(PAPER_TABLES))
def test_every_paper_experiment_has_a_valid_report_block_naming_an_existing_table(name):
    spec = experiment_spec(name)
    assert spec.name == name.removesuffix("_replace")
    if spec.paper is not None:
        assert (CONF.parent / "experiments" / "paper_tables" / f"{spec.paper.table}.csv").exists()


def test_full_scale_overrides_replace_the_tiny_sweep():
    cfg = make(["+experiment=vgid_table3", "model=llava7b", "data=mllmu_bench"])
    assert cfg.model.name == "llava7b" and cfg.forget_ratio == 5


@pytest.mark.parametrize(("change", "message"), [
    ({"colums": {}}, "unknown key(s) ['colums']"),
    ({"columns": {"splits": ["forget"], "modalities": ["image"], "metrics": ["class_acc"]}},
     "report.columns.modalities='image' is not one of ['image_text', 'text_only']"),
    ({"treatment": "seed"}, "report.treatment='seed' is not one of the row keys"),
    ({"resamples": 100}, "report.resamples=100 must be an integer >= 1000"),
    ({"paper": {"table": "vgid_table3", "keys": {"method": "method"}}},
     "report.paper.keys.method='method' is not one of the row keys"),
])
def test_a_bad_report_block_names_the_key(change, message):
    block = {"name": "t", "title": "t", "rows": ["model.name", "method.name"],
             "columns": {"splits": ["forget"], "modalities": ["image_text"],
                         "metrics": ["class_acc"]}} | change
    with pytest.raises(ReportSpecError) as err:
        parse_report(block)
    assert message in str(err.value)


# ---- a fixture multirun: three jobs of vgid_table3 on "llava7b" (so the paper matches) ----

BASE = {("forget", "class_acc"): [1, 1, 0, 1], ("retain", "class_acc"): [1, 0, 1, 1, 1],
        ("forget", "gen_rougeL"): [0.8, 0.6], ("retain", "gen_rougeL"): [0.9, 0.7]}
UNLEARNED = {("forget", "class_acc"): [0, 1, 0, 0], ("retain", "class_acc"): [1, 0, 1, 1, 0],
             ("forget", "gen_rougeL"): [0.2, 0.4], ("retain", "gen_rougeL"): [0.85, 0.65]}
TASKS = {"class_acc": "classification", "gen_rougeL": "generation"}


def _generations(model, scores):
    for (split, metric), values in scores.items():
        for i, v in enumerate(values):
            yield {"split": split, "modality": "image_text", "task": TASKS[metric],
                   "profile_id": str(i), "question": f"q{i}", "prediction": "A", "truth": "A",
                   "score": {metric: float(v)}, "model": model}


def _metrics(scores):
    out = {}
    for (split, metric), v in scores.items():
        out.setdefault(split, {"image_text": {}})["image_text"][metric] = sum(v) / len(v)
    return out


def _job(root, num, method, results=True, error=None):
    d = root / f"{num}_{method}_llava7b_f5"
    (d / ".hydra").mkdir(parents=True)
    (d / ".hydra" / "overrides.yaml").write_text(f"- method={method}\n- +experiment=vgid_table3\n")
    cfg = make(["+experiment=vgid_table3", f"method={method}", "model=llava7b"])
    OmegaConf.save({k: cfg[k] for k in ("method", "model", "forget_ratio", "report")},
                   d / "config.yaml")
    if results:
        (d / "metrics.json").write_text(json.dumps({"base": _metrics(BASE),
                                                    "unlearned": _metrics(UNLEARNED)}))
        rows = [*_generations("base", BASE), *_generations("unlearned", UNLEARNED)]
        (d / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (d / "manifest.json").write_text(json.dumps({"git_commit": "abc123def4567890"}))
    if error:
        (d / "error.json").write_text(json.dumps(error))
    return d


@pytest.fixture
def multirun(tmp_path):
    root = tmp_path / "multirun"
    _job(root, 0, "ga")
    _job(root, 1, "npo", results=False,
         error={"status": "diverged", "message": "training diverged at step 3: loss=nan"})
    _job(root, 2, "po", results=False)   # killed: neither metrics.json nor error.json
    return root


def _csv(path):
    with path.open() as f:
        return list(csv.DictReader(f))


def test_the_report_renders_the_paper_layout_with_intervals_and_every_job(multirun, tmp_path):
    out = tmp_path / "out"
    assert report_main([str(multirun), "--out", str(out)]) == 0
    md = (out / "vgid_table3.md").read_text()
    lines = md.splitlines()
    assert "| model.name | row | job | status | forget img cloze_acc | forget img class_acc |" \
        in md
    base = next(line for line in lines if line.startswith("| llava7b | Base |"))
    assert base.split(" | ")[6].startswith("0.700 [0.600, 0.800]")  # forget ROUGE-L
    forget_base = bootstrap([1, 1, 0, 1], seed=0)   # items sorted by key: ids 0..3
    assert f"{forget_base.mean * 100:.1f} [{forget_base.low * 100:.1f}, " \
           f"{forget_base.high * 100:.1f}]" in base
    assert base.split(" | ")[5].startswith("75.0 [")
    ga = lines[lines.index(base) + 2]
    assert ga.startswith("| llava7b | GA | 0 | ok | — | 25.0 [0.0, 75.0] |")
    # the paper's LLaVA-1.5-7B 5 % numbers under ours (Vgid Table 3): Base, then GA
    assert lines[lines.index(base) + 1].split(" | ")[4:7] == ["23.91", "49.17", "0.571"]
    assert lines[lines.index(ga) + 1].split(" | ")[4:7] == ["21.74", "37.50", "0.567"]
    assert "| llava7b | NPO | 1 | **diverged**: training diverged at step 3: loss=nan | — |" \
        in md
    assert "| llava7b | PO | 2 | **failed**: no metrics.json" in md
    assert "1 job(s)" not in md and "3 job(s), 1 finished; job 1 diverged; job 2 failed" in md
    assert "code at commit `abc123def456`" in md
    # change table: forget class 75 -> 25 is -50, retain 80 -> 60 is -20
    change = md.split("Change from the base model")[1]
    assert "| llava7b | GA | 0 | ok | — | -50.0 [" in change
    assert "| -20.0 [" in change
    assert "![Forget ROUGE-L reduction vs retain ROUGE-L (Vgid Figure 4)]" \
        "(vgid_table3_tradeoff_rougeL.png)" in md
    assert (out / "vgid_table3_tradeoff_rougeL.png").read_bytes()[:4] == b"\x89PNG"

    rows = _csv(out / "vgid_table3.csv")
    ga_forget = next(r for r in rows if r["row"] == "GA" and r["split"] == "forget"
                     and r["metric"] == "class_acc")
    assert (ga_forget["value"], ga_forget["delta"], ga_forget["n"]) == ("25", "-50", "4")
    assert ga_forget["paper_value"] == "37.50"
    assert float(ga_forget["delta_low"]) <= -50 <= float(ga_forget["delta_high"])
    statuses = {r["row"]: r["status"] for r in rows}
    assert statuses == {"Base": "ok", "GA": "ok", "NPO": "diverged", "PO": "failed"}


def test_a_tiny_model_gets_the_papers_table_for_reference_only(multirun, tmp_path):
    for config in multirun.glob("*/config.yaml"):
        config.write_text(config.read_text().replace("name: llava7b", "name: tiny_llava"))
    out = tmp_path / "out"
    assert report_main([str(multirun), "--out", str(out)]) == 0
    md = (out / "vgid_table3.md").read_text()
    assert "| ↳ paper" not in md
    assert "The paper's numbers (vgid_table3; other models than ours" in md
    assert "| llava-1.5-7b | 5 | GA | 21.74 | 37.50 | 0.567 |" in md


def test_the_page_keeps_its_reading_and_replaces_the_report(multirun, tmp_path):
    spec = experiment_spec("vgid_table3")
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "vgid_table3.md").write_text(
        f"old\n{BEGIN}\nold table\n{END}\n\n## Reading\n\nMine.\n")
    page = write_page(spec, "NEW TABLE\n", None, pages)
    text = page.read_text()
    assert "old table" not in text and "NEW TABLE" in text
    assert text.endswith(f"{END}\n\n## Reading\n\nMine.\n")
    assert "python -m unlearn -m +experiment=vgid_table3 " in text


def test_the_callback_records_a_divergence_and_renders_the_sweep(multirun):
    job_dir = multirun / "1_npo_llava7b_f5"
    (job_dir / "error.json").unlink()
    config = OmegaConf.create({
        "hydra": {"mode": RunMode.MULTIRUN, "runtime": {"output_dir": str(job_dir)},
                  "sweep": {"dir": str(multirun)}},
        "report": OmegaConf.load(multirun / "0_ga_llava7b_f5" / "config.yaml").report})
    failed = JobReturn(status=JobStatus.FAILED,
                       _return_value=DivergenceError("training diverged at step 9: loss=inf"))
    ReportOnJobEnd().on_job_end(config, failed)
    assert json.loads((job_dir / "error.json").read_text()) == {
        "status": "diverged", "type": "DivergenceError",
        "message": "training diverged at step 9: loss=inf"}
    md = (multirun / "report" / "vgid_table3.md").read_text()
    assert "| NPO | 1 | **diverged**: training diverged at step 9: loss=inf |" in md


def test_trade_off_coordinates_are_the_papers_axes(multirun):
    from unlearn.report.plots import coordinate
    from unlearn.report.runs import load_jobs
    from unlearn.report.spec import Axis, Cell
    from unlearn.report.table import build_rows

    _, rows = build_rows(experiment_spec("vgid_table3"), load_jobs([multirun]))
    ga = next(r for r in rows if r.label == "GA")
    base = next(r for r in rows if r.kind == "base")
    forget = Cell("forget", "image_text", "gen_rougeL")
    retain = Cell("retain", "image_text", "gen_rougeL")
    assert coordinate(ga, Axis(forget, "reduction")) == pytest.approx(0.7 - 0.3)  # Figure 4's x
    assert coordinate(ga, Axis(forget, "delta")) == pytest.approx(-0.4)
    assert coordinate(ga, Axis(retain)) == pytest.approx(0.75)
    assert coordinate(base, Axis(forget, "reduction")) == 0.0
    accuracy = Cell("forget", "image_text", "class_acc")
    assert coordinate(ga, Axis(accuracy, "delta")) == pytest.approx(-50.0)   # in percent
