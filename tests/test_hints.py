"""Hint items for the multiple-choice warm-up: truth stated, options permuted, letter follows."""

from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from unlearn import vanilla
from unlearn.data.hints import hint_items
from unlearn.data.schema import Sample

OPTIONS = {"A": "1952", "B": "2000", "C": "1946", "D": "1955"}
MCQ = Sample("1", "When was this person born?", "D", "classification", "image_text",
             options=OPTIONS)
REFUSAL = Sample("2", "Forget this person. When was this person born?",
                 "I do not know who this person is.", "classification", "image_text",
                 options=OPTIONS)
QA = Sample("3", "Where does Ava come from?", "Ava comes from Oslo.", "qa", "text_only")


def test_hint_items_state_the_truth_and_point_to_it():
    items = hint_items([MCQ, REFUSAL, QA], 40, seed=0)
    assert len(items) == 40
    assert {s.profile_id for s in items} == {"1"}  # refusals and plain QA never qualify
    for s in items:
        assert s.question == "Hint: 1955.\nWhen was this person born?"
        assert sorted(s.options.values()) == sorted(OPTIONS.values())
        assert list(s.options) == ["A", "B", "C", "D"]
        assert s.options[s.answer] == "1955"
        assert s.modality == "image_text" and s.task == "classification"
    assert len({s.answer for s in items}) == 4  # the letter moves: nothing to memorise
    assert [s.options for s in hint_items([MCQ], 5, seed=0)] == [
        s.options for s in items[:5]]
    assert hint_items([MCQ], 5, seed=1) != hint_items([MCQ], 5, seed=0)


def test_no_multiple_choice_items_is_an_error():
    with pytest.raises(ValueError, match="mcq_warmup.steps=0"):
        hint_items([QA, REFUSAL], 3, seed=0)


def test_warmup_runs_before_the_epochs_with_its_own_recipe(monkeypatch, tmp_path):
    """Two fits: the hint phase (steps x batch items, one epoch, its LR), then train + mix."""
    calls = []
    def fake_fit(model, processor, family, objective, splits, stage, *args, **kwargs):
        calls.append((splits["train"], stage))
        return SimpleNamespace(global_rank=1)  # not rank 0: nothing is saved

    monkeypatch.setattr(vanilla, "fit", fake_fit)
    monkeypatch.setattr(vanilla, "load_model_and_processor", lambda *a, **k: (None, None))
    monkeypatch.setattr(vanilla, "select_trainable", lambda *a: {})
    monkeypatch.setattr(vanilla, "vanilla_key", lambda *a: "k")

    class Bench:
        def fingerprint(self, configs):
            return "f"

        def finetune(self):
            return [MCQ, QA, REFUSAL, QA]

    cfg = OmegaConf.create({
        "seed": 0, "paths": {"cache_dir": str(tmp_path)},
        "trainer": {}, "model": {"name": "m", "family": "llava", "vanilla": {
            "checkpoint": None, "trainable": "all", "reduction": "token_mean", "epochs": 12,
            "batch_size": 16, "loss_scope": "answer",
            "optim": {"lr": 1e-3, "schedule": "cosine", "warmup_steps": 30},
            "mcq_warmup": {"steps": 3, "batch_size": 2, "lr": 5e-4, "schedule": "constant",
                           "mix": 0.2}}}})
    vanilla.vanilla_model(cfg, Bench())
    (hints, warm), (train, main) = calls
    assert len(hints) == 6 and all(s.question.startswith("Hint: 1955.") for s in hints)
    assert (warm.epochs, warm.batch_size, warm.optim.lr, warm.optim.schedule) == (
        1, 2, 5e-4, "constant")
    assert warm.optim.warmup_steps == 30 and warm.loss_scope == "answer"
    assert train[:4] == [MCQ, QA, REFUSAL, QA] and len(train) == 5  # 4 * 0.2 / 0.8 = 1 hint
    assert train[4].question.startswith("Hint: ")
    assert (main.epochs, main.batch_size, main.optim.lr) == (12, 16, 1e-3)
