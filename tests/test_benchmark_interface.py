"""The core asks the benchmark and its eval config, never a benchmark's own names; the
likelihood metrics of evaluated items; config checks against the chosen benchmark."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from scipy.stats import hmean, ks_2samp

from unlearn.config import validate
from unlearn.data.schema import Sample
from unlearn.errors import UserError
from unlearn.eval import likelihood_items
from unlearn.eval.likelihood_items import add_likelihood, likelihood_item, likelihood_summary

ROOT = Path(__file__).resolve().parents[1]
CONF = str(ROOT / "conf")
# the modules that run every benchmark
CORE = ("pipeline.py", "vanilla.py", "results.py", "config.py", "module.py", "train.py",
        "eval/evaluator.py", "eval/likelihood_items.py", "data/configured.py")
# split, task and config names of MLLMU-Bench and CLEAR, and their modules
BENCHMARK_NAMES = {"forget_5", "retain_95", "Test_Set", "Retain_Set", "ft_Data", "Full_Set",
                   "celebrity", "test", "real_faces", "real_world", "classification", "cloze",
                   "generation", "choice", "full+tofu", "retain_perturbed"}
BENCHMARK_MODULES = ("unlearn.data.mllmu", "unlearn.data.clear", "unlearn.data.synthetic",
                     "unlearn.data.clear_twin")


def make(overrides=()):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def _code_strings(tree: ast.AST) -> set[str]:
    """String constants that are not docstrings."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docstrings}


@pytest.mark.parametrize("module", CORE)
def test_the_core_names_no_benchmark_split_or_task(module):
    tree = ast.parse((ROOT / "unlearn" / module).read_text())
    assert not _code_strings(tree) & BENCHMARK_NAMES
    imported = {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module}
    assert not any(m.startswith(BENCHMARK_MODULES) for m in imported)


@pytest.mark.parametrize(("overrides", "message"), [
    (["forget_ratio=15", "data=synthetic_clear"],
     "forget_ratio=15 is not one of [1, 5, 10] (the forget ratios of data='synthetic_clear')"),
    (["forget_ratio=1"],
     "forget_ratio=1 is not one of [5, 10, 15] (the forget ratios of data='synthetic_mllmu')"),
    (["data=synthetic_clear", "eval.splits=[forget,celebrity]"],
     "eval.splits has ['celebrity']; allowed for data='synthetic_clear': "
     "['forget', 'retain', 'real_faces', 'real_world']"),
    (["eval.metrics.cloze=[cloze_acc,meteor]"], "eval.metrics.cloze has ['meteor']; allowed: "),
    (["data=synthetic_clear", "+eval.table.class_acc=class"],
     "eval.table shows ['class_acc'], which eval.metrics does not score"),
    (["eval.likelihood.enabled=true", "eval.likelihood.task=qa"],
     "eval.likelihood.task='qa' is not one of the evaluated tasks "
     "['classification', 'cloze', 'generation']"),
    (["data=synthetic_clear", "eval.splits=[retain]"],
     "eval.likelihood.forget_quality needs the 'forget' split in eval.splits=['retain']"),
    (["data.benchmark._target_=unlearn.data.schema.Sample"],
     "data.benchmark._target_='unlearn.data.schema.Sample' is not a "
     "unlearn.data.benchmark.Benchmark subclass"),
])
def test_config_is_checked_against_the_chosen_benchmark(overrides, message):
    with pytest.raises(UserError) as e:
        validate(make(overrides))
    assert str(e.value).startswith(message)


def test_each_benchmark_selects_its_own_evaluation():
    clear, mllmu = make(["data=synthetic_clear", "forget_ratio=5"]), make()
    validate(clear)
    assert clear.eval.name == "clear" and list(clear.eval.metrics) == ["choice", "qa"]
    assert mllmu.eval.name == "mllmu" and not mllmu.eval.likelihood.enabled
    assert clear.eval.batch_size == mllmu.eval.batch_size  # shared settings: eval_defaults
    assert make(["data=synthetic_clear", "eval=mllmu"]).eval.name == "mllmu"  # command wins


OPTIONS = {"A": "Oslo", "B": "Lima", "C": "Pune"}


def test_likelihood_items_by_hand():
    mcq = Sample("p1", "Where was she born?", "B", "classification", "image_text",
                 options=OPTIONS, split="forget")
    item, normalized = likelihood_item(mcq)
    assert (item.answer, item.meta["perturbed"], item.options, normalized) == (
        "Lima", ["Oslo", "Pune"], None, True)
    caption = Sample("p1", "Describe the image.", "Ana smiles.", "qa", "image_text",
                     meta={"paraphrase": "Ana is smiling.", "perturbed": ["Bo smiles."]})
    assert likelihood_item(caption) == (caption, False)
    assert likelihood_item(Sample("p1", "Who?", "Ana", "qa", "text_only")) is None


def test_add_likelihood_writes_per_item_values_whose_means_are_clears_metrics(monkeypatch):
    # two forget items and one retain item with hand-set losses
    rows = [{"gt_loss": 0.5, "paraphrase_loss": 0.5, "perturbed_loss": [1.5, 2.5]},
            {"gt_loss": 1.0, "paraphrase_loss": 2.0, "perturbed_loss": [1.0, 1.0]},
            {"gt_loss": 0.2, "paraphrase_loss": 0.2, "perturbed_loss": [1.2, 1.2]}]
    monkeypatch.setattr(likelihood_items, "likelihood_rows", lambda *a, **k: rows)
    samples = [Sample(f"p{i}", "Where?", "A", "classification", "image_text", options=OPTIONS,
                      split=split) for i, split in enumerate(("forget", "forget", "retain"))]
    samples.append(Sample("p9", "Who?", "x", "classification", "text_only", split="retain"))
    records = [{"split": s.split, "score": {}} for s in samples]
    add_likelihood(None, None, "llava", samples, records, "classification",
                   forget_split="forget", batch_size=2)
    e = math.exp
    # normalised probability p_true / (p_true + sum p_wrong)
    assert records[0]["score"]["classification_prob"] == pytest.approx(
        e(-0.5) / (e(-0.5) + e(-1.5) + e(-2.5)))
    # TR = exp(mean(perturbed) - paraphrase): 1.5, 1/e, 1.0 -> forget: min(TR, 1/TR)
    assert records[0]["truth_ratio"] == pytest.approx(e(1.5))
    assert records[0]["score"]["classification_truth_ratio"] == pytest.approx(e(-1.5))
    assert records[1]["score"]["classification_truth_ratio"] == pytest.approx(e(-1.0))
    # retain: max(0, 1 - 1/TR) with TR = e
    assert records[2]["score"]["classification_truth_ratio"] == pytest.approx(1 - e(-1.0))
    assert records[3] == {"split": "retain", "score": {}}  # no options: not scorable


def test_likelihood_summary_forget_quality_and_model_utility_by_hand():
    ours = [{"split": "forget", "task": "qa", "truth_ratio": tr} for tr in (0.1, 0.2, 0.3, 4.0)]
    gold = [{"split": "forget", "task": "qa", "truth_ratio": tr} for tr in (0.5, 0.9, 1.1, 2.0)]
    other = [{"split": "forget", "task": "choice", "truth_ratio": 9.0}]  # another task: ignored
    metrics = {"forget": {"image_text": {"qa_prob": 0.9, "choice_acc": 0.1}},
               "retain": {"image_text": {"qa_prob": 0.5, "qa_truth_ratio": 0.25,
                                         "choice_acc": 1.0, "gen_rougeL": 0.7}}}
    out = likelihood_summary(metrics, ours + other, forget_split="forget", task="qa",
                             utility=["choice_acc"], gold_records=gold)
    assert out["forget_quality"] == pytest.approx(
        ks_2samp([0.1, 0.2, 0.3, 4.0], [0.5, 0.9, 1.1, 2.0]).pvalue)
    assert out["forget_quality"] == pytest.approx(0.22857142857142856)  # D = 3/4, n = m = 4
    # forget split and metrics outside the utility list stay out
    assert out["model_utility"] == pytest.approx(hmean([0.5, 0.25, 1.0]))
    assert out["model_utility"] == pytest.approx(3 / (2 + 4 + 1))
    assert "forget_quality" not in likelihood_summary(
        metrics, ours, forget_split="forget", task="qa", utility=[])
