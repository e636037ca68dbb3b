"""Two CPU processes (gloo) run a few GA steps and end with identical, updated weights."""

import json

import lightning as L
import pytest
from omegaconf import OmegaConf

from unlearn.data.mllmu import MLLMUBench
from unlearn.methods.gradient import GradientAscent
from unlearn.models.loading import load_model_and_processor
from unlearn.models.modules import select_trainable
from unlearn.train import fit

from .conftest import CONF


class Checksum(L.Callback):
    """Each rank writes a checksum of its weights after training."""

    def __init__(self, out_dir):
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module):
        total = sum(p.detach().double().sum().item() for p in pl_module.model.parameters())
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(
            json.dumps({"checksum": total, "world": trainer.world_size,
                        "steps": trainer.global_step}))


@pytest.mark.slow
def test_two_process_ddp_ga_steps(tiny_bench_dir, tmp_path):
    bench = MLLMUBench(str(tiny_bench_dir), forget_ratio=10, seed=0)
    model, processor = load_model_and_processor(OmegaConf.create({
        "name": "tiny", "family": "llava", "source": "tiny", "pretrained_id": None,
        "dtype": "float32", "attn_implementation": "sdpa",
        "tiny": {"size": "tiny", "image_size": 64, "seed": 0}}))
    select_trainable(model, "all")
    before = sum(p.detach().double().sum().item() for p in model.parameters())
    stage = OmegaConf.create({"epochs": 1, "batch_size": 2, "loss_scope": "answer",
                              "optim": {"lr": 1e-3, "schedule": "constant"}})
    trainer_cfg = OmegaConf.load(f"{CONF}/trainer/ddp_cpu.yaml")
    trainer_cfg.log_every_n_steps = 1
    forget = bench.forget_train()[:8]
    fit(model, processor, "llava", GradientAscent(), {"forget": forget}, stage, trainer_cfg,
        seed=0, callbacks=[Checksum(tmp_path)])

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 2  # 8 samples / (2 ranks x batch 2)
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], abs=1e-9)
    assert ranks[0]["checksum"] != pytest.approx(before, abs=1e-6)
    after = sum(p.detach().double().sum().item() for p in model.parameters())
    assert after == pytest.approx(ranks[0]["checksum"], abs=1e-6)  # weights came back
