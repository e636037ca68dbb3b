"""W&B: a finished run's results as written by ``WANDB_MODE=offline``, read back from the run's
own files (its ``.wandb`` record log and ``files/media``), not from mocks."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import wandb
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf
from PIL import Image
from wandb.proto import wandb_internal_pb2

from unlearn import dashboard, loggers
from unlearn.data.mllmu import MLLMUBench
from unlearn.errors import UserError
from unlearn.eval.metrics import METRICS

from .conftest import CONF

BLOCK, HEADER = 32768, 7  # the .wandb file: LevelDB log blocks after a 7-byte ":W&B" header

RESULTS = {
    "base": {"forget": {"image_text": {"class_acc": 0.75, "gen_rougeL": 0.5}},
             "retain": {"image_text": {"class_acc": 0.5, "gen_rougeL": 0.25}}},
    "unlearned": {"forget": {"image_text": {"class_acc": 0.25, "gen_rougeL": 0.125}},
                  "retain": {"image_text": {"class_acc": 0.5, "gen_rougeL": 0.375}}},
    "relearn": {"before": {"forget": {"text_only": {"class_acc": 0.25}}},
                "after": {"forget": {"text_only": {"class_acc": 0.75}}},
                "gain": {"forget": {"text_only": {"class_acc": 0.5}}},
                "average_gain": 0.5},
}


def record(model, split, task, question, prediction, truth="A", **extra):
    return {"split": split, "modality": "image_text", "task": task, "profile_id": "4",
            "question": question, "prediction": prediction, "truth": truth, "model": model,
            **extra}


RECORDS = [
    record("base", "forget", "classification", "Who?", " A"),
    record("base", "forget", "classification", "Born?", " B"),
    record("base", "retain", "generation", "Job?", "a baker", truth="a baker"),
    record("unlearned", "forget", "classification", "Who?", " C"),
    record("unlearned", "forget", "classification", "Born?", " D"),
    record("unlearned", "retain", "generation", "Job?", "a pilot", truth="a baker"),
    record("unlearned", "forget", "classification", "Who?", " B", attack="relearn"),
]


def cfg(method=None, **logger):
    return OmegaConf.create({
        "logger": {"name": "wandb", "project": "unlearn-test", "entity": None, "group": "vkd",
                   "mode": "offline", **logger},
        "model": {"name": "tiny_llava"}, "method": method or {"name": "ga_diff"},
        "forget_ratio": 5,
        "perturbation": {"name": "gaussian"}, "prompt_style": {"name": "strict"},
        "trainable_modules": {"scope": "vision"}, "run_name": "ga_diff_tiny_llava_f5"})


def put(target: dict, item, value) -> None:
    """An update at ``item.key``, or at its ``nested_key`` path (a logged table's fields)."""
    *parents, last = [item.key] if item.key else list(item.nested_key)
    for key in parents:
        target = target.setdefault(key, {})
    target[last] = value


def read_offline_run(run_dir: Path, name: str = "offline-run-*") -> dict:
    """The run record, config, summary and history of an offline run's ``.wandb`` file, the
    updates applied in order (what ``wandb sync`` would upload).

    ``run.finish()`` may return before wandb's service has written the file out: shutting the
    service down first makes it complete (the next run starts a new one)."""
    wandb.teardown()
    (path,) = run_dir.glob(f"wandb/{name}/run-*.wandb")
    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    out = {"run": None, "config": {}, "summary": {}, "history": [], "exit_code": None}
    pos, chunks = HEADER, []
    while pos + HEADER <= len(raw):
        left = BLOCK - pos % BLOCK
        kind = raw[pos + 6] if left >= HEADER else 0
        if kind == 0:  # zero padding at the end of a block
            pos += left
            continue
        _, length, _ = struct.unpack("<IHB", raw[pos:pos + HEADER])
        chunks.append(raw[pos + HEADER:pos + HEADER + length])
        pos += HEADER + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(b"".join(chunks))
            chunks = []
            which = rec.WhichOneof("record_type")
            if which == "exit":
                out["exit_code"] = rec.exit.exit_code
            if which == "run":
                out["run"] = rec.run
                items = rec.run.config.update
            else:
                items = {"config": rec.config.update, "summary": rec.summary.update}.get(which, ())
            target = out["summary"] if which == "summary" else out["config"]
            for item in items:
                put(target, item, json.loads(item.value_json))
            if which == "history":
                out["history"].append({})
                for item in rec.history.item:
                    put(out["history"][-1], item, json.loads(item.value_json))
    return out


def media(run_dir: Path, pattern: str) -> list[Path]:
    return sorted(run_dir.glob(f"wandb/offline-run-*/files/media/{pattern}"))


def test_summary_keys_are_metrics_json_paths_and_deltas():
    assert loggers.summary_metrics(RESULTS) == {
        "base/forget/image_text/class_acc": 0.75, "base/forget/image_text/gen_rougeL": 0.5,
        "base/retain/image_text/class_acc": 0.5, "base/retain/image_text/gen_rougeL": 0.25,
        "unlearned/forget/image_text/class_acc": 0.25,
        "unlearned/forget/image_text/gen_rougeL": 0.125,
        "unlearned/retain/image_text/class_acc": 0.5,
        "unlearned/retain/image_text/gen_rougeL": 0.375,
        "relearn/before/forget/text_only/class_acc": 0.25,
        "relearn/after/forget/text_only/class_acc": 0.75,
        "relearn/gain/forget/text_only/class_acc": 0.5, "relearn/average_gain": 0.5,
        "delta/forget/image_text/class_acc": -0.5, "delta/forget/image_text/gen_rougeL": -0.375,
        "delta/retain/image_text/class_acc": 0.0, "delta/retain/image_text/gen_rougeL": 0.125,
    }


def test_generations_pair_base_and_unlearned_answers_taking_each_split_in_turn():
    rows = loggers.generation_rows(RECORDS, samples=2)
    assert rows == [
        ["forget", "image_text", "classification", "4", "Who?", "A", " A", " C"],
        ["retain", "image_text", "generation", "4", "Job?", "a baker", "a baker", "a pilot"],
    ]
    base_only = [r for r in RECORDS if r["model"] == "base"]
    assert [r[-1] for r in loggers.generation_rows(base_only, samples=5)] == [None] * 3


def test_offline_run_holds_group_tags_config_summary_tables_and_images(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    png = tmp_path / "tradeoff.png"
    Image.fromarray(np.full((4, 6, 3), 200, dtype=np.uint8)).save(png)
    logger = loggers.build_logger(cfg(), tmp_path)
    manifest = {"seed": 0, "dataset": {"forget_ids": ["4", "10"]}}
    loggers.log_results(logger, RESULTS, RECORDS, manifest, tmp_path, samples=2)

    run = read_offline_run(tmp_path)
    assert (run["run"].run_group, run["run"].job_type) == ("vkd", "ga_diff")
    assert list(run["run"].tags) == ["model:tiny_llava", "method:ga_diff", "forget:5",
                                     "perturbation:gaussian", "prompt:strict", "scope:vision"]
    assert run["config"]["manifest"] == manifest
    assert run["config"]["trainable_modules"] == {"scope": "vision"}
    assert run["config"]["logger"]["group"] == "vkd"
    numbers = {k: v for k, v in run["summary"].items()  # "_…": wandb's own (time, step)
               if not k.startswith("_") and not isinstance(v, dict)}
    assert numbers == loggers.summary_metrics(RESULTS) | {"trainer/global_step": 0}

    (splits,) = media(tmp_path, "table/results/splits_*.table.json")
    table = json.loads(splits.read_text())
    assert table["columns"] == ["stage", "split", "modality", "class_acc", "gen_rougeL"]
    assert table["data"] == [
        ["base", "forget", "image_text", 0.75, 0.5], ["base", "retain", "image_text", 0.5, 0.25],
        ["unlearned", "forget", "image_text", 0.25, 0.125],
        ["unlearned", "retain", "image_text", 0.5, 0.375],
        ["relearn/before", "forget", "text_only", 0.25, None],
        ["relearn/after", "forget", "text_only", 0.75, None],
        ["relearn/gain", "forget", "text_only", 0.5, None]]
    (generations,) = media(tmp_path, "table/results/generations_*.table.json")
    table = json.loads(generations.read_text())
    assert table["columns"] == list(loggers.GENERATION_COLUMNS)
    assert table["data"] == loggers.generation_rows(RECORDS, samples=2)
    assert run["summary"]["results/generations"]["_type"] == "table-file"

    (image,) = media(tmp_path, "images/report/tradeoff_*.png")
    assert np.asarray(Image.open(image)).tolist() == np.asarray(Image.open(png)).tolist()
    assert run["summary"]["report/tradeoff"]["_type"] == "image-file"

    assert wandb.run is None  # closed: the next job of a multirun opens its own


def test_each_job_of_a_multirun_is_its_own_run(tmp_path, monkeypatch):
    """A job that failed after its run opened leaves it open: the next job closes it as failed
    instead of logging into it."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    failed = loggers.build_logger(cfg(), tmp_path / "job0")
    failed.experiment.log({"train/loss": 3.0})
    done = loggers.build_logger(cfg(method={"name": "npo"}), tmp_path / "job1")
    loggers.log_results(done, RESULTS, RECORDS, {}, tmp_path / "job1", samples=0)
    first, second = read_offline_run(tmp_path / "job0"), read_offline_run(tmp_path / "job1")
    assert (first["run"].job_type, first["exit_code"]) == ("ga_diff", 1)
    assert (second["run"].job_type, second["exit_code"]) == ("npo", 0)
    assert "train/loss" not in second["summary"]
    assert second["summary"]["unlearned/forget/image_text/class_acc"] == 0.25


def test_csv_logger_gets_no_results(tmp_path):
    logger = loggers.build_logger(cfg(name="csv"), tmp_path)
    loggers.log_results(logger, RESULTS, RECORDS, {}, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_group_is_the_experiment_choice_when_no_name_is_set():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        composed = compose("config", overrides=["logger=wandb", "+experiment=vkd"],
                           return_hydra_config=True)
    HydraConfig.instance().set_config(composed)
    try:
        assert composed.logger.group is None
        assert loggers.wandb_group(composed) == "vkd"
    finally:
        HydraConfig.instance().cfg = None
    assert loggers.wandb_group(composed) == "default"  # outside Hydra, no choice to read
    assert loggers.wandb_group(cfg()) == "vkd"


# what a run logs besides the summary numbers: its tables and Lightning's training curve
LOGGED = {"results/splits", "results/generations", "trainer/global_step", "train/loss"}


def test_dashboard_plots_only_keys_a_run_logs():
    full = {stage: {split: {mod: dict.fromkeys(METRICS, 0.5) for mod in ("image_text",
                                                                         "text_only")}
                    for split in MLLMUBench.eval_split_names} for stage in ("base", "unlearned")}
    keys = dashboard.logged_keys(dashboard.workspace_spec("vkd", entity="me"))
    assert keys[:2] == ["unlearned/forget/image_text/class_acc",
                        "unlearned/retain/image_text/class_acc"]
    assert set(keys) - LOGGED <= set(loggers.summary_metrics(full))
    assert LOGGED <= set(keys)


def test_dashboard_without_wandb_workspaces_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "wandb_workspaces", None)
    with pytest.raises(UserError, match="pip install wandb-workspaces"):
        dashboard.build_workspace(dashboard.workspace_spec("vkd", entity="me"))


def test_dashboard_workspace_builds_offline():
    pytest.importorskip("wandb_workspaces")
    workspace = dashboard.build_workspace(dashboard.workspace_spec("vkd", entity="me"))
    assert workspace.runset_settings.filters == "Metric('Group') == 'vkd'"
    spec = workspace._to_model().model_dump(by_alias=True)
    (scatter, *_) = spec["spec"]["section"]["panelBankConfig"]["sections"][0]["panels"]
    assert (scatter["config"]["xAxis"], scatter["config"]["yAxis"]) == (
        "summary:unlearned/forget/image_text/class_acc",
        "summary:unlearned/retain/image_text/class_acc")


@pytest.mark.slow
def test_tiny_run_with_logger_wandb_writes_its_results_offline(tmp_path, monkeypatch):
    from unlearn.pipeline import run

    from .test_pipeline import TINY

    monkeypatch.setenv("WANDB_MODE", "offline")
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        composed = compose("config", overrides=[
            f"paths.root={tmp_path}", *TINY, "data.synthetic.num_profiles=4",
            "data.synthetic.num_celebrities=1", "method=ga", "method.epochs=1",
            "logger=wandb", "logger.mode=offline", "logger.samples=3"])
    results = run(composed, tmp_path / "run")
    logged = read_offline_run(tmp_path / "run")
    assert logged["run"].job_type == "ga" and logged["run"].run_group == "default"
    stages = [k.split("/")[0] for k in logged["summary"] if "/" in k]
    assert (stages.count("base"), stages.count("unlearned"), stages.count("delta")) == (
        48, 48, 48)  # 4 splits x 2 modalities x 6 metrics each
    for key, value in loggers.summary_metrics(results).items():
        assert logged["summary"][key] == pytest.approx(value, abs=1e-12), key
    assert any("train/loss" in step for step in logged["history"])
    plotted = set(dashboard.logged_keys(dashboard.workspace_spec("default", entity="me")))
    assert plotted - LOGGED <= set(logged["summary"])
    (generations,) = media(tmp_path / "run", "table/results/generations_*.table.json")
    assert len(json.loads(generations.read_text())["data"]) == 3


def test_an_experiments_report_goes_to_one_report_run(tmp_path, monkeypatch):
    """The sweep's report (PNGs, CSV) lands in one W&B run of the experiment's group."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "report"
    out.mkdir()
    Image.fromarray(np.full((3, 5, 3), 90, dtype=np.uint8)).save(out / "vgid_table3_tradeoff.png")
    (out / "vgid_table3.csv").write_text("row,forget img class_acc\nGA,64.0\nBase,80.0\n")
    loggers.log_report(cfg(), out, "vgid_table3")

    run = read_offline_run(out)
    assert (run["run"].run_group, run["run"].job_type) == ("vkd", "report")
    assert run["run"].display_name == "vgid_table3 report"
    assert run["summary"]["report/vgid_table3_tradeoff"]["_type"] == "image-file"
    (table,) = sorted(out.glob("wandb/offline-run-*/files/media/table/report/table_*.table.json"))
    assert json.loads(table.read_text())["data"] == [["GA", "64.0"], ["Base", "80.0"]]
    loggers.log_report(cfg(name="csv"), tmp_path / "none", "x")  # other loggers: nothing
    assert not (tmp_path / "none").exists()
