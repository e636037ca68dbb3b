"""CLEAR end to end on a tiny twin: vanilla and gold models, base eval, GA, eval, summary."""

import json

import pytest
from hydra import compose, initialize_config_dir

from unlearn.pipeline import run

from .conftest import CONF

TINY_CLEAR = [
    "data=synthetic_clear", "data.synthetic.num_persons=10", "data.synthetic.portraits=2",
    "data.synthetic.qa_per_person=2", "data.synthetic.num_real_faces=4",
    "data.synthetic.num_real_world=4", "model.tiny.size=tiny", "model.vanilla.epochs=2",
    "model.vanilla.mcq_warmup.steps=2", "model.vanilla.mcq_warmup.batch_size=4",
    "eval.max_new_tokens.choice=4", "eval.max_new_tokens.qa=12", "logger=none",
]


@pytest.mark.slow
def test_tiny_clear_pipeline_end_to_end(tmp_path):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.root={tmp_path}", *TINY_CLEAR, "method=ga",
                                           "method.optim.lr=1e-3", "method.epochs=2"])
    run_dir = tmp_path / "run"
    run(cfg, run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics) == ["base", "gold", "unlearned", "summary"]
    assert list(metrics["base"]) == ["forget", "retain", "real_faces", "real_world"]
    assert list(metrics["gold"]) == ["forget"]  # the gold model is scored where FQ needs it
    forget = metrics["base"]["forget"]["image_text"]
    assert list(forget) == ["gen_rouge1", "gen_rougeL", "gen_bleu", "choice_acc",
                            "gen_rougeL_recall", "choice_prob", "choice_truth_ratio",
                            "qa_prob", "qa_truth_ratio"]
    # real faces / real world: name or VQA choice only, image+text only
    assert set(metrics["base"]["real_faces"]["image_text"]) == {
        "choice_acc", "choice_prob", "choice_truth_ratio"}
    assert metrics["base"]["real_world"]["text_only"] == {}
    # text QA has no wrong answers: ROUGE only
    assert set(metrics["base"]["retain"]["text_only"]) == {
        "gen_rouge1", "gen_rougeL", "gen_bleu", "gen_rougeL_recall"}
    for stage in ("base", "unlearned"):
        summary = metrics["summary"][stage]
        assert 0 < summary["forget_quality"] <= 1 and summary["model_utility"] >= 0
    # GA at a high LR lowers the forget captions' likelihood
    after = metrics["unlearned"]["forget"]["image_text"]
    assert after["qa_prob"] < forget["qa_prob"]

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["gold"]["fingerprint"] != manifest["model"]["fingerprint"]
    assert manifest["gold"]["cached"] is False
    rows = [json.loads(x) for x in (run_dir / "generations.jsonl").read_text().splitlines()]
    gold = [r for r in rows if r["model"] == "gold"]
    assert gold and {r["split"] for r in gold} == {"forget"}
    assert all("truth_ratio" in r for r in gold if r["task"] == "qa" and r["modality"]
               == "image_text")
