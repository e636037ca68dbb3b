"""End to end on the tiny world: data -> vanilla -> base eval -> GA -> eval -> run directory."""

import json

import pytest
from hydra import compose, initialize_config_dir

from unlearn.pipeline import run
from unlearn.results import claim_run_dir

from .conftest import CONF

TINY = [
    "data.synthetic.num_profiles=12", "data.synthetic.num_celebrities=4",
    "data.synthetic.test_views=2", "data.synthetic.num_facts=4", "model.tiny.size=tiny",
    "model.vanilla.epochs=2",
    "model.vanilla.mcq_warmup.steps=2", "model.vanilla.mcq_warmup.batch_size=4",
    "eval.max_new_tokens.classification=4", "eval.max_new_tokens.cloze=8",
    "eval.max_new_tokens.generation=12", "logger=csv",
]


def compose_cfg(tmp_path, overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=[f"paths.root={tmp_path}", *TINY, *overrides])


@pytest.mark.slow
def test_tiny_pipeline_end_to_end(tmp_path):
    cfg = compose_cfg(tmp_path, ["method=ga", "method.optim.lr=1e-3", "method.epochs=2"])
    run_dir = tmp_path / "run1"
    results = run(cfg, run_dir)

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(results))
    assert set(metrics) == {"base", "unlearned"}
    for stage in metrics.values():
        assert set(stage) == {"forget", "test", "retain", "celebrity"}
        for split in stage.values():
            assert set(split) == {"image_text", "text_only"}
            assert set(split["image_text"]) == {"class_acc", "cloze_acc", "gen_rouge1",
                                                "gen_rouge2", "gen_rougeL", "gen_bleu"}
            assert all(0.0 <= v <= 1.0 for v in split["image_text"].values())

    rows = [json.loads(x) for x in (run_dir / "generations.jsonl").read_text().splitlines()]
    per_model = {m: [r for r in rows if r["model"] == m] for m in ("base", "unlearned")}
    assert len(per_model["base"]) == len(per_model["unlearned"]) > 0
    assert {"question", "prompt", "prediction", "truth", "score"} <= set(rows[0])

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["seed"] == 0 and manifest["world_size"] == 1
    assert manifest["effective_batch_size"] == 4
    assert manifest["model"]["cached"] is False and manifest["base_eval_cached"] is False
    assert (run_dir / "config.yaml").exists()
    assert (run_dir / "logs" / "metrics.csv").exists()

    # GA at a high LR must destroy the forget answers
    base = metrics["base"]["forget"]["image_text"]
    after = metrics["unlearned"]["forget"]["image_text"]
    assert after["gen_rougeL"] < base["gen_rougeL"]

    # second run: vanilla model and base results come from the caches, identical numbers
    again = run(cfg, tmp_path / "run2")
    manifest2 = json.loads((tmp_path / "run2" / "manifest.json").read_text())
    assert manifest2["model"]["cached"] is True and manifest2["base_eval_cached"] is True
    assert again["base"] == metrics["base"]

    with pytest.raises(FileExistsError, match="never overwritten"):
        claim_run_dir(run_dir)

    # few-shot evaluation of the cached vanilla model (method=none: no unlearning)
    few = compose_cfg(tmp_path, ["method=none", "eval.few_shot.enabled=true"])
    out = run(few, tmp_path / "run3")
    assert set(out) == {"base"}
    rows3 = [json.loads(x) for x in (tmp_path / "run3" / "generations.jsonl").open()]
    mcq = [r for r in rows3 if r["task"] == "classification" and r["split"] == "retain"]
    assert mcq and all("Correct Answer:" in r["prompt"] for r in mcq)
    zero_shot = [r for r in per_model["base"]
                 if r["task"] == "classification" and r["split"] == "retain"]
    assert len({r["profile_id"] for r in mcq}) == len({r["profile_id"] for r in zero_shot}) - 1


@pytest.mark.slow
def test_tiny_pipeline_po_with_lora(tmp_path):
    """PO (aligned refusal split, adapter-disabled reference) on LoRA, merged before eval."""
    cfg = compose_cfg(tmp_path, ["method=po", "trainable_modules=lora",
                                 "trainable_modules.lora.r=4", "method.optim.lr=1e-3"])
    results = run(cfg, tmp_path / "po")
    assert set(results) == {"base", "unlearned"}
    manifest = json.loads((tmp_path / "po" / "manifest.json").read_text())
    counts = manifest["parameters"]
    assert counts["trainable"] == counts["by_group"]["lora"]["trainable"] > 0
    assert counts["by_group"]["language"]["trainable"] == 0
    logged = (tmp_path / "po" / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "train/margin" in logged and "train/refusal_nll" in logged


@pytest.mark.slow
def test_likelihood_metrics_are_an_opt_in_for_mllmu(tmp_path):
    cfg = compose_cfg(tmp_path, ["method=none", "eval.likelihood.enabled=true",
                                 "eval.splits=[forget,retain]"])
    metrics = run(cfg, tmp_path / "run")
    forget = metrics["base"]["forget"]
    # classification items: the right option's text against the other three options
    for modality in ("image_text", "text_only"):
        assert {"classification_prob", "classification_truth_ratio"} <= set(forget[modality])
        assert 0 < forget[modality]["classification_prob"] < 1
    assert not {"cloze_prob", "generation_prob"} & set(forget["image_text"])  # no wrong answers
    # no gold model unless asked: model utility only (retain's likelihood values)
    assert list(metrics["summary"]["base"]) == ["model_utility"]
