"""Hint items for the multiple-choice warm-up: truth stated, options permuted, letter follows,
a fresh item at every read; the epochs' own multiple-choice items reshuffled each epoch."""

from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from unlearn import vanilla
from unlearn.data.datamodule import UnlearnDataModule
from unlearn.data.hints import FreshHints, FreshOptions
from unlearn.data.schema import Sample

OPTIONS = {"A": "1952", "B": "2000", "C": "1946", "D": "1955"}
MCQ = Sample("1", "When was this person born?", "D", "classification", "image_text",
             options=OPTIONS)
REFUSAL = Sample("2", "Forget this person. When was this person born?",
                 "I do not know who this person is.", "classification", "image_text",
                 options=OPTIONS)
QA = Sample("3", "Where does Ava come from?", "Ava comes from Oslo.", "qa", "text_only")


def test_hint_items_state_the_truth_and_point_to_it():
    hints = FreshHints([MCQ, REFUSAL, QA], 40, seed=0)
    items = [hints[i] for i in range(len(hints))]
    assert len(items) == 40
    assert {s.profile_id for s in items} == {"1"}  # refusals and plain QA never qualify
    for s in items:
        assert s.question == "Hint: 1955.\nWhen was this person born?"
        assert sorted(s.options.values()) == sorted(OPTIONS.values())
        assert list(s.options) == ["A", "B", "C", "D"]
        assert s.options[s.answer] == "1955"
        assert s.modality == "image_text" and s.task == "classification"
    assert len({s.answer for s in items}) == 4  # the letter moves: nothing to memorise


def test_every_epoch_draws_new_items_deterministically():
    def two_epochs(seed):
        hints = FreshHints([MCQ], 30, seed=seed)
        epochs = []
        for epoch in range(2):
            hints.set_epoch(epoch)
            epochs.append([hints[i].options for i in range(30)])
        return epochs

    first, second = two_epochs(0)
    assert first != second  # the second epoch sees other option orders
    assert sum(a == b for a, b in zip(first, second, strict=True)) < 15  # ~1/24 by chance
    assert two_epochs(0) == [first, second]  # same seed, same stream
    assert two_epochs(1)[0] != first


def test_no_multiple_choice_items_is_an_error():
    with pytest.raises(ValueError, match="mcq_warmup.steps=0"):
        FreshHints([QA, REFUSAL], 3, seed=0)


def test_data_module_keeps_a_dataset_instead_of_copying_it():
    hints = FreshHints([MCQ], 4, seed=0)
    dm = UnlearnDataModule({"train": hints, "retain": [QA]}, collate=list, batch_size=2)
    assert dm.splits["train"] is hints and dm.splits["retain"] == [QA]


class Bench:
    def fingerprint(self, part):
        return "f"

    def train_set(self, name):
        assert name == "finetune"
        return [MCQ, QA, REFUSAL, QA]


def run_vanilla(monkeypatch, tmp_path, **vanilla_cfg):
    """The vanilla stage with a recording ``fit``: returns its (train items, stage) calls."""
    calls = []

    def fake_fit(model, processor, family, objective, splits, stage, *args, **kwargs):
        calls.append((splits["train"], stage))
        return SimpleNamespace(global_rank=1)  # not rank 0: nothing is saved

    monkeypatch.setattr(vanilla, "fit", fake_fit)
    monkeypatch.setattr(vanilla, "load_model_and_processor", lambda *a, **k: (None, None))
    monkeypatch.setattr(vanilla, "select_trainable", lambda *a: {})
    monkeypatch.setattr(vanilla, "vanilla_key", lambda *a: "k")
    cfg = OmegaConf.create({
        "seed": 0, "paths": {"cache_dir": str(tmp_path)}, "data": {"name": "d"},
        "trainer": {}, "model": {"name": "m", "family": "llava", "vanilla": {
            "checkpoint": None, "trainable": "all", "reduction": "token_mean", "epochs": 12,
            "batch_size": 16, "loss_scope": "answer",
            "optim": {"lr": 1e-3, "schedule": "cosine", "warmup_steps": 30}, **vanilla_cfg}}})
    vanilla.vanilla_model(cfg, Bench())
    return calls


def test_warmup_runs_before_the_epochs_with_its_own_recipe(monkeypatch, tmp_path):
    """Two fits: the hint phase (steps x batch items, one epoch, its LR), then train + mix."""
    calls = run_vanilla(monkeypatch, tmp_path, length_groups=2, mcq_warmup={
        "steps": 3, "batch_size": 2, "lr": 5e-4, "schedule": "constant", "mix": 0.2,
        "length_groups": 3})
    (hints, warm), (train, main) = calls
    assert len(hints) == 6 and all(hints[i].question.startswith("Hint: 1955.") for i in range(6))
    assert (warm.epochs, warm.batch_size, warm.optim.lr, warm.optim.schedule) == (
        1, 2, 5e-4, "constant")
    assert (warm.length_groups, main.length_groups) == (3, 2)
    assert warm.optim.warmup_steps == 30 and warm.loss_scope == "answer"
    assert [train[i] for i in range(4)] == [MCQ, QA, REFUSAL, QA]
    assert len(train) == 5 and train[4].question.startswith("Hint: ")  # 4 * 0.2 / 0.8 = 1
    assert (main.epochs, main.batch_size, main.optim.lr) == (12, 16, 1e-3)


def test_the_mix_applies_without_warmup_too(monkeypatch, tmp_path):
    (train, main), = run_vanilla(monkeypatch, tmp_path, mcq_warmup={
        "steps": 0, "batch_size": 2, "lr": 5e-4, "schedule": "constant", "mix": 0.5})
    fixed, hints = train.datasets
    assert fixed == [MCQ, QA, REFUSAL, QA]
    assert isinstance(hints, FreshHints) and len(hints) == 4  # 4 * 0.5 / 0.5
    (plain, _), = run_vanilla(monkeypatch, tmp_path)
    assert plain == [MCQ, QA, REFUSAL, QA]  # neither option: the items themselves


def test_reshuffled_options_move_the_letter_with_the_truth_every_epoch():
    items = FreshOptions([MCQ, QA, REFUSAL], seed=0)
    orders = []
    for epoch in range(24):
        items.set_epoch(epoch)
        s = items[0]
        assert s.options[s.answer] == "1955" and list(s.options) == ["A", "B", "C", "D"]
        assert sorted(s.options.values()) == sorted(OPTIONS.values())
        assert s.question == MCQ.question  # no hint: the model must recall the fact
        assert items[1] == QA and items[2] == REFUSAL  # refusals and plain QA unchanged
        orders.append(tuple(s.options.values()))
    assert len(set(orders)) > 8 and {o.index("1955") for o in orders} == {0, 1, 2, 3}
    again = FreshOptions([MCQ], seed=0)
    again.set_epoch(5)
    assert tuple(again[0].options.values()) == orders[5]  # a function of seed, item, epoch


def test_reshuffle_switch_wraps_the_epoch_items(monkeypatch, tmp_path):
    (train, _), = run_vanilla(monkeypatch, tmp_path, reshuffle_options=True, mcq_warmup={
        "steps": 0, "batch_size": 2, "lr": 5e-4, "schedule": "constant", "mix": 0.5})
    fixed, hints = train.datasets
    assert isinstance(fixed, FreshOptions) and fixed.samples == [MCQ, QA, REFUSAL, QA]
    assert isinstance(hints, FreshHints) and len(train) == 8


def test_vanilla_key_changes_with_the_stage_code_version(monkeypatch):
    cfg = OmegaConf.create({"seed": 0, "model": {"name": "m", "vanilla": {}}, "trainer": {}})
    key = vanilla.vanilla_key(cfg, "f")
    assert vanilla.vanilla_key(cfg, "f") == key
    monkeypatch.setattr(vanilla, "STAGE_VERSION", vanilla.STAGE_VERSION + 1)
    assert vanilla.vanilla_key(cfg, "f") != key
