"""The shipped vanilla model: its recipe is the default's, it is found by fingerprint, and it
reproduces the numbers recorded beside it."""

import json
import logging

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from unlearn import vanilla
from unlearn.models.loading import load_model_and_processor, save_checkpoint
from unlearn.ship import MAX_BYTES, finetune_digest, folder_bytes
from unlearn.utils import plain

from .conftest import CONF


def default_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_the_shipped_model_is_the_default_recipe():
    """Fails when the twin, the model config or the stage recipe changed without a rebuild."""
    cfg = default_cfg()
    record = vanilla.shipped_record(cfg.model.name)
    assert record is not None, "no shipped vanilla model: run `make vanilla`"
    recipe = vanilla.vanilla_recipe(cfg, vanilla.data_recipe(cfg))
    changed = {k: (record["recipe"].get(k), v) for k, v in recipe.items()
               if record["recipe"].get(k) != v}
    assert not changed, f"the default recipe changed, run `make vanilla`: {changed}"
    assert record["key"] == vanilla.vanilla_key(cfg, vanilla.data_recipe(cfg))


def test_the_shipped_model_is_small_and_complete():
    folder = vanilla.SHIPPED / "tiny_llava"
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", vanilla.RECORD} <= names
    assert folder_bytes(folder) <= MAX_BYTES
    record = vanilla.shipped_record("tiny_llava")
    assert set(record["versions"]) >= {"torch", "transformers"}
    assert record["sequences"] > 0 and record["items_per_s"] > 0


def test_key_follows_the_stage_seed_not_the_run_seed_nor_the_unlearning_strategy():
    cfg = default_cfg()
    key = vanilla.vanilla_key(cfg, "data")
    assert vanilla.vanilla_key(default_cfg("seed=3"), "data") == key
    assert vanilla.vanilla_key(default_cfg("model.vanilla.seed=1"), "data") != key
    assert vanilla.vanilla_key(default_cfg("model.vanilla.trainer.precision=bf16-mixed"),
                               "data") != key
    assert vanilla.vanilla_key(cfg, "other data") != key
    assert vanilla.vanilla_key(default_cfg("model.vanilla.trainer=null"), "data") == key
    assert vanilla.vanilla_key(default_cfg("model.vanilla.trainer=null", "trainer=ddp_cpu"),
                               "data") != key  # null: the run's trainer builds it


TINY_STAGE = {"accelerator": "cpu", "devices": 1, "strategy": "auto", "precision": "32-true",
              "gradient_clip_val": 1.0}
GPU_STAGE = {"accelerator": "gpu", "devices": 1, "strategy": "auto", "precision": "bf16-mixed",
             "gradient_clip_val": None}


@pytest.mark.parametrize(("model", "stage"), [
    ("tiny_llava", TINY_STAGE), ("llava7b", GPU_STAGE), ("qwen25vl3b", GPU_STAGE)])
@pytest.mark.parametrize("trainer", ["cpu", "gpu", "ddp", "ddp_cpu", "fsdp",
                                     "gpu +trainer.accumulate_grad_batches=4"])
def test_the_unlearning_trainer_neither_changes_nor_rebuilds_the_base_model(model, stage,
                                                                           trainer):
    """Every trainer option gives the fingerprint of the model's default trainer (one cache
    entry, one shipped model) and the stage trains with its own trainer: one device, no
    strategy, the run's settings (accumulation here) left out."""
    default = default_cfg(f"model={model}")
    cfg = default_cfg(f"model={model}", *(f"trainer={trainer}").split())
    key = vanilla.vanilla_key(default, vanilla.data_recipe(default))
    assert vanilla.vanilla_key(cfg, vanilla.data_recipe(cfg)) == key
    assert plain(vanilla.stage_trainer(cfg)) == stage


def test_data_recipe_of_the_twin_needs_no_build_and_follows_its_arguments():
    cfg = default_cfg()
    recipe = vanilla.data_recipe(cfg)
    assert recipe["num_profiles"] == cfg.data.synthetic.num_profiles and recipe["version"] >= 5
    assert vanilla.data_recipe(default_cfg("data.synthetic.num_profiles=20")) != recipe


class Bench:
    def fingerprint(self, part):
        raise AssertionError("a synthetic twin is identified by its recipe")

    def train_set(self, name):
        raise AssertionError("the shipped model must be used, not rebuilt")


def fake_shipped(tmp_path, monkeypatch, cfg, key: str, versions: dict | None = None):
    """A tiny checkpoint shipped under ``tmp_path`` with ``key`` recorded."""
    model, processor = load_model_and_processor(OmegaConf.create(
        {"family": "llava", "source": "tiny", "tiny": {"size": "tiny", "image_size": 32}}))
    folder = tmp_path / "assets" / cfg.model.name
    save_checkpoint(model, processor, folder)
    (folder / vanilla.RECORD).write_text(json.dumps(
        {"key": key, "versions": versions or vanilla.library_versions()}))
    monkeypatch.setattr(vanilla, "SHIPPED", tmp_path / "assets")
    return model


def test_the_shipped_model_is_loaded_when_the_fingerprint_matches(tmp_path, monkeypatch, caplog):
    cfg = default_cfg(f"paths.root={tmp_path}")
    key = vanilla.vanilla_key(cfg, vanilla.data_recipe(cfg))
    shipped = fake_shipped(tmp_path, monkeypatch, cfg, key,
                           versions={"torch": "2.1.0", "transformers": "5.24.1"})
    with caplog.at_level(logging.WARNING):
        model, _, info = vanilla.vanilla_model(cfg, Bench())
    assert info == {"vanilla": "shipped:tiny_llava", "fingerprint": key, "cached": True,
                    "shipped": True}
    weights = dict(shipped.named_parameters())
    assert all((p == weights[n]).all() for n, p in model.named_parameters())
    assert "torch 2.1.0 -> 2.13" in caplog.text and "transformers" not in caplog.text


def test_another_recipe_or_shipped_false_does_not_use_the_shipped_model(tmp_path, monkeypatch):
    cfg = default_cfg(f"paths.root={tmp_path}")
    fake_shipped(tmp_path, monkeypatch, cfg, "another-key")
    with pytest.raises(AssertionError, match="must be used, not rebuilt"):
        vanilla.vanilla_model(cfg, Bench())  # falls through to a build
    key = vanilla.vanilla_key(cfg, vanilla.data_recipe(cfg))
    fake_shipped(tmp_path, monkeypatch, cfg, key)
    off = default_cfg(f"paths.root={tmp_path}", "model.vanilla.shipped=false")
    with pytest.raises(AssertionError, match="must be used, not rebuilt"):
        vanilla.vanilla_model(off, Bench())


@pytest.mark.slow
def test_the_shipped_model_reproduces_its_recorded_numbers(tmp_path):
    """Same weights, same twin, same evaluation: the recorded forget table, to 3 decimals."""
    from unlearn.pipeline import eval_splits, load_benchmark, run_eval

    record = vanilla.shipped_record("tiny_llava")
    base = record["base_eval"]
    cfg = default_cfg(f"paths.root={tmp_path}", f"forget_ratio={base['forget_ratio']}",
                      f"seed={base['seed']}", "eval.splits=[forget]")
    bench = load_benchmark(cfg)
    # the twin this machine generates is, item for item and pixel for pixel, the shipped one's
    assert finetune_digest(bench) == record["finetune_digest"]
    model, processor, info = vanilla.vanilla_model(cfg, bench)
    assert info.get("shipped") is True
    metrics, _ = run_eval(cfg, model, processor, eval_splits(cfg, bench))
    for modality, values in base["metrics"]["forget"].items():
        for metric, value in values.items():
            assert round(metrics["forget"][modality][metric], 3) == round(value, 3), (
                modality, metric)


def test_an_unreadable_cache_entry_is_moved_aside_and_rebuilt(tmp_path, monkeypatch, caplog):
    cfg = default_cfg(f"paths.root={tmp_path}", "model.vanilla.shipped=false")
    key = vanilla.vanilla_key(cfg, vanilla.data_recipe(cfg))
    entry = tmp_path / ".cache" / "vanilla" / f"tiny_llava-{key}"
    fake_shipped(tmp_path, monkeypatch, cfg, key)
    (tmp_path / "assets" / "tiny_llava").rename(entry.parent.mkdir(parents=True) or entry)
    weights = entry / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated, as by a full disk
    with caplog.at_level(logging.WARNING), pytest.raises(AssertionError, match="not rebuilt"):
        vanilla.vanilla_model(cfg, Bench())  # the rebuild starts
    aside = [p.name for p in entry.parent.iterdir() if not p.name.startswith(".")]
    assert not entry.exists() and len(aside) == 1 and ".corrupt-" in aside[0]
    assert "unreadable" in caplog.text and str(entry) in caplog.text
