"""Relearning attack (``eval.attack=relearn``, docs/relearn.md): the people split, its
disjointness from the scored questions, the accuracy gain by hand, and a tiny run end to end."""

import json

import pytest

from unlearn.data.collate import CLEAN
from unlearn.data.mllmu import MLLMUBench
from unlearn.data.schema import Sample
from unlearn.data.views import attack_view
from unlearn.errors import UserError
from unlearn.pipeline import run
from unlearn.relearn import (
    accuracy_gain,
    check_disjoint,
    heldout_splits,
    relearn_items,
    split_people,
)

from .test_pipeline import compose_cfg


def test_people_split_sizes_cover_and_seed():
    ids = [str(i) for i in range(10)]
    for fraction, k in ((0.4, 4), (0.05, 1), (0.25, 3), (0.99, 9)):  # round half up, 1..n-1
        people = split_people(ids, fraction, seed=0)
        assert len(people.relearn) == k and len(people.heldout) == 10 - k
        assert set(people.relearn) | set(people.heldout) == set(ids)
        assert not set(people.relearn) & set(people.heldout)
    assert split_people(ids, 0.4, seed=0) == split_people(list(reversed(ids)), 0.4, seed=0)
    assert len({split_people(ids, 0.4, seed=s).relearn for s in range(8)}) > 1  # seeded draw
    assert split_people(["7", "3"], 0.9, seed=0).heldout  # one is always held out
    with pytest.raises(UserError, match="at least 2 forget people"):
        split_people(["7"], 0.4, seed=0)


def test_relearn_set_shares_no_person_and_no_question_with_the_scored_questions(tiny_bench_dir):
    bench = MLLMUBench(str(tiny_bench_dir), forget_ratio=15)
    people = split_people(bench.forget_ids, 0.4, seed=0)
    items = relearn_items(bench.forget_train(), people)
    scored = heldout_splits({"forget": bench.forget(), "test": bench.test(),
                             "retain": bench.retain()}, people)
    assert set(scored) == {"forget", "test"}  # only the splits about the forget people

    assert {s.profile_id for s in items} == set(people.relearn)
    # every fine-tuning item of the relearn people, nothing else
    train = bench.forget_train()
    assert len(items) == sum(s.profile_id in people.relearn for s in train) > 0
    questions = [s for samples in scored.values() for s in samples]
    assert {s.profile_id for s in questions} == set(people.heldout)
    # every question of the held-out people is scored
    assert len(scored["forget"]) == sum(s.profile_id in people.heldout for s in bench.forget())
    assert not {s.profile_id for s in items} & {s.profile_id for s in questions}
    assert not {s.question for s in items} & {s.question for s in questions}  # not even text
    check_disjoint(items, scored)

    leaked = Sample(profile_id=people.heldout[0], question=questions[0].question, answer="x",
                    task="qa", modality="text_only")
    with pytest.raises(RuntimeError, match="share people"):
        check_disjoint([*items, leaked], scored)


def test_accuracy_gain_is_after_minus_before_and_the_mean_of_the_accuracy_gains():
    before = {"forget": {"image_text": {"class_acc": 0.25, "cloze_acc": 0.5, "gen_rougeL": 0.5},
                         "text_only": {"class_acc": 0.75, "cloze_acc": 1.0}},
              "test": {"image_text": {"class_acc": 0.5, "cloze_acc": 0.0, "gen_bleu": 0.25}}}
    after = {"forget": {"image_text": {"class_acc": 0.75, "cloze_acc": 0.25, "gen_rougeL": 0.75},
                        "text_only": {"class_acc": 0.75, "cloze_acc": 1.0}},
             "test": {"image_text": {"class_acc": 1.0, "cloze_acc": 0.5, "gen_bleu": 0.125}}}
    gain, average = accuracy_gain(before, after)
    assert gain == {"forget": {"image_text": {"class_acc": 0.5, "cloze_acc": -0.25,
                                              "gen_rougeL": 0.25},
                               "text_only": {"class_acc": 0.0, "cloze_acc": 0.0}},
                    "test": {"image_text": {"class_acc": 0.5, "cloze_acc": 0.5,
                                            "gen_bleu": -0.125}}}
    # (0.5 - 0.25 + 0 + 0 + 0.5 + 0.5) / 6: ROUGE and BLEU are no accuracies
    assert average == 1.25 / 6
    assert accuracy_gain({"forget": {"image_text": {"gen_bleu": 0.5}}},
                         {"forget": {"image_text": {"gen_bleu": 0.75}}})[1] is None


def test_relearn_is_no_view_of_the_question():
    with pytest.raises(ValueError, match="view of the question"):
        attack_view(CLEAN, "relearn")


@pytest.mark.slow
def test_tiny_run_with_the_relearning_attack(tmp_path):
    cfg = compose_cfg(tmp_path, ["method=ga", "forget_ratio=15", "eval.attack=relearn",
                                 "eval.splits=[forget,test,retain]", "eval.relearn.steps=4",
                                 "eval.relearn.optim.lr=1e-3"])
    results = run(cfg, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(results))
    assert set(metrics) == {"base", "unlearned", "relearn"}
    relearn = metrics["relearn"]
    assert set(relearn) == {"before", "after", "gain", "average_gain", "control"}
    assert set(relearn["control"]) == {"before", "after", "gain", "average_gain"}
    for entry in (relearn, relearn["control"]):
        assert set(entry["before"]) == set(entry["after"]) == set(entry["gain"]) == {
            "forget", "test"}
        for split, by_mod in entry["gain"].items():
            for mod, gains in by_mod.items():
                assert set(gains) == set(entry["before"][split][mod])
                for metric, value in gains.items():
                    assert value == pytest.approx(entry["after"][split][mod][metric]
                                                  - entry["before"][split][mod][metric])
        acc = [g[m] for by_mod in entry["gain"].values() for g in by_mod.values()
               for m in ("class_acc", "cloze_acc")]
        assert entry["average_gain"] == pytest.approx(sum(acc) / len(acc))

    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())["relearn"]
    assert len(manifest["relearn_ids"]) == len(manifest["heldout_ids"]) == 1  # 2 forget people
    assert manifest["steps"] == 4 and manifest["items"] > 0
    # relearning changed both models: the relearned items' loss dropped
    assert manifest["nll"]["after"] < manifest["nll"]["before"]
    assert manifest["control_nll"]["after"] < manifest["control_nll"]["before"]

    rows = [json.loads(x) for x in (tmp_path / "run" / "generations.jsonl").open()]
    attacked = [r for r in rows if r.get("attack") == "relearn"]
    assert {r["model"] for r in attacked} == {"unlearned", "unlearned_relearned",
                                              "never_trained", "never_trained_relearned"}
    assert {r["profile_id"] for r in attacked} == set(manifest["heldout_ids"])
    assert {r["split"] for r in attacked} == {"forget", "test"}
    # before and after score the same questions, a subset of the unlearned evaluation's
    asked = {m: sorted((r["split"], r["task"], r["question"]) for r in attacked
                       if r["model"] == m) for m in ("unlearned", "unlearned_relearned")}
    assert asked["unlearned"] == asked["unlearned_relearned"]
    assert set(asked["unlearned"]) <= {(r["split"], r["task"], r["question"]) for r in rows
                                       if r["model"] == "unlearned" and "attack" not in r}
