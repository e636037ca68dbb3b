"""FSDP: the units per model family, the strategy built from the trainer group, refusals at
start, the model back in one piece after sharding, and two CPU ranks through
``python -m unlearn trainer=fsdp_cpu`` matching ``trainer=ddp_cpu``."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.strategies import FSDPStrategy
from omegaconf import OmegaConf

from unlearn import fsdp
from unlearn.config import validate
from unlearn.models.loading import load_model_and_processor

from .conftest import CONF


def make(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def tiny(family: str) -> torch.nn.Module:
    size = 64 if family == "llava" else 56  # Qwen: a multiple of 28
    model, _ = load_model_and_processor(OmegaConf.create({
        "family": family, "source": "tiny", "tiny": {"size": "tiny", "image_size": size}}))
    return model


@pytest.mark.parametrize(("family", "decoder", "vision"), [
    ("llava", "LlamaDecoderLayer", "CLIPEncoderLayer"),
    ("qwen2_vl", "Qwen2VLDecoderLayer", "Qwen2VLVisionBlock"),
    ("qwen2_5_vl", "Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"),
])
def test_layer_classes_per_family_and_the_units_are_the_decoder_layers(family, decoder, vision):
    model = tiny(family)
    classes = fsdp.layer_classes(model)
    assert {c.__name__ for c in classes["decoder"]} == {decoder}
    assert {c.__name__ for c in classes["vision"]} == {vision}
    assert fsdp.unit_classes(model) == classes["decoder"]


@pytest.mark.parametrize(("trainer", "expected"), [
    ("fsdp", True), ("fsdp_cpu", True), ("ddp", False), ("ddp_cpu", False), ("cpu", False),
    ("gpu trainer.strategy=fsdp", True)])
def test_is_fsdp_reads_the_strategy(trainer, expected):
    cfg = make(*f"trainer={trainer}".split())
    assert fsdp.is_fsdp(cfg.trainer) is expected


@pytest.mark.parametrize("checkpointing", [False, True])
def test_the_strategy_wraps_the_models_decoder_layers(checkpointing):
    cfg = make("trainer=fsdp", f"trainer.activation_checkpointing={checkpointing}")
    model = tiny("llava")
    strategy = fsdp.build_strategy(cfg.trainer, model)
    assert type(strategy) is FSDPStrategy
    layer = next(iter(fsdp.layer_classes(model)["decoder"]))
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {layer}
    assert strategy.kwargs["use_orig_params"] is True
    assert strategy._state_dict_type == "sharded"
    assert strategy.sharding_strategy.name == "FULL_SHARD"
    policy = strategy._activation_checkpointing_kwargs.get("auto_wrap_policy")
    assert (policy._module_classes == {layer}) if checkpointing else policy is None
    cpu = fsdp.build_strategy(make("trainer=fsdp_cpu").trainer, model)
    assert isinstance(cpu, fsdp.CPUFSDPStrategy) and cpu._process_group_backend == "gloo"


@pytest.mark.parametrize(("overrides", "message"), [
    (["method=mmunlearner"], "method='mmunlearner' cannot train under trainer='fsdp' (FSDP): "
                             "its gradient masks"),
    (["method=vkd"], "method='vkd' cannot train under trainer='fsdp' (FSDP): its teacher is a "
                     "snapshot"),
    (["method=ga_diff", "method.backward_per_term=true"],
     "method.backward_per_term=true cannot train under FSDP"),
    (["method=ga", "method.gradient_checkpointing=true"],
     "method.gradient_checkpointing=true under FSDP: use trainer.activation_checkpointing=true"),
])
def test_what_cannot_shard_is_refused_at_start(overrides, message):
    with pytest.raises(fsdp.FSDPError) as err:
        validate(make("trainer=fsdp", *overrides))
    assert str(err.value).startswith(message)
    validate(make("trainer=ddp", *overrides))  # other strategies: not this check's business


@pytest.mark.parametrize("method", ["ga", "ga_diff", "kl_min", "npo", "po", "rmu", "vgid",
                                    "none", "icu"])
def test_the_other_methods_pass(method):
    validate(make("trainer=fsdp", f"method={method}"))


def test_unwrap_restores_plain_modules_and_whole_weights(tmp_path):
    """One gloo rank: wrap a tiny LLaVA (in a holder, as Lightning wraps the LightningModule)
    with the decoder layers as units, gather the whole weights, unwrap: the same module
    objects and parameter values, no FSDP wrapper or mark left, the tied structure kept."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    model = tiny("llava")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    layers = list(model.model.language_model.layers)
    holder = torch.nn.Module()
    holder.model = model
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0,
                            world_size=1)
    try:
        root = FSDP(holder, device_id=torch.device("cpu"), use_orig_params=True,
                    auto_wrap_policy=ModuleWrapPolicy(fsdp.unit_classes(model)))
        assert isinstance(model.model.language_model.layers[0], FSDP)
        gather = fsdp.FullWeights()
        with FSDP.state_dict_type(root, StateDictType.FULL_STATE_DICT,
                                  FullStateDictConfig(rank0_only=False)):
            gather.state = root.state_dict()
        for p in model.parameters():  # what training would do to the shards
            p.data.add_(1.0)
        gather.restore(holder)
    finally:
        dist.destroy_process_group()
    assert list(model.model.language_model.layers) == layers
    assert not any(isinstance(m, FSDP) for m in model.modules())
    assert not any(hasattr(m, mark) for m in model.modules() for mark in fsdp.FSDP_MARKS)
    after = dict(model.named_parameters())
    assert after.keys() == before.keys()
    for name, value in before.items():
        assert torch.equal(after[name], value), name
    assert gather.state is None


# --- two CPU ranks through the command line ------------------------------------------------

REDUCED = ["data.synthetic.num_profiles=4", "data.synthetic.num_celebrities=1",
           "model.tiny.size=tiny", "model.vanilla.shipped=false", "model.vanilla.epochs=1",
           "model.vanilla.mcq_warmup.steps=0", "eval.splits=[forget]",
           "eval.max_new_tokens.generation=4", "method.epochs=1", "progress.every_s=0",
           "resume.enabled=false", "trainer.log_every_n_steps=1", "method.optim.lr=1e-3",
           "method.optim.schedule=constant"]


def _run(root: Path, name: str, *overrides: str) -> Path:
    run_dir = root / name
    job = subprocess.run(
        [sys.executable, "-m", "unlearn", *REDUCED, *overrides, f"paths.root={root}",
         f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert job.returncode == 0, job.stderr[-3000:]
    return run_dir


def _losses(run_dir: Path) -> list[float]:
    with (run_dir / "logs" / "metrics.csv").open() as f:
        return [float(row["train/loss"]) for row in csv.DictReader(f) if row["train/loss"]]


def _predictions(run_dir: Path, model: str) -> list[str]:
    rows = [json.loads(line) for line in (run_dir / "generations.jsonl").open()]
    return [r["prediction"] for r in rows if r["model"] == model]


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory):
    """One root: the first run builds the vanilla model (its own 1-CPU trainer), the rest
    reuse it."""
    return tmp_path_factory.mktemp("fsdp")


@pytest.mark.slow
def test_two_fsdp_ranks_train_ga_as_two_ddp_ranks(shared_root):
    """Same 8 steps (4 forget items per step, 2 per rank), same rank-0 losses, the same
    greedy answers after unlearning: the sharded update, the gradient clipping over both
    shards and the weights gathered back equal DDP's."""
    sharded = _run(shared_root, "fsdp", "trainer=fsdp_cpu", "method=ga")
    replicated = _run(shared_root, "ddp", "trainer=ddp_cpu", "method=ga")
    assert (sharded / "metrics.json").is_file()
    losses = _losses(sharded)
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses)
    assert losses == pytest.approx(_losses(replicated), rel=1e-4)
    assert losses[-1] < losses[0] - 0.5  # gradient ascent: the forget NLL grows
    unlearned = _predictions(sharded, "unlearned")
    assert unlearned == _predictions(replicated, "unlearned")
    assert unlearned != _predictions(sharded, "base")  # the trained weights came back
    manifest = json.loads((sharded / "manifest.json").read_text())
    assert manifest["world_size"] == 2


@pytest.mark.slow
def test_two_fsdp_ranks_train_npo_with_its_sharded_frozen_reference(shared_root):
    """NPO's frozen reference is inside the wrapped module (sharded, no gradient): the
    first step's loss is NPO's at θ = θ_ref, (2/β)·log 2, on both ranks' items alike. With
    FSDP's activation checkpointing (the decoder layers recomputed in the backward)."""
    run_dir = _run(shared_root, "npo", "trainer=fsdp_cpu", "method=npo",
                   "trainer.activation_checkpointing=true")
    losses = _losses(run_dir)
    assert all(math.isfinite(v) for v in losses)
    assert losses[0] == pytest.approx(2 / 0.9 * math.log(2), rel=1e-5)
    assert losses[-1] < losses[0]
    assert (run_dir / "metrics.json").is_file()
