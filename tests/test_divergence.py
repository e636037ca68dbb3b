"""A diverged run stops at the first non-finite loss and writes no results."""

import pytest
import torch
from omegaconf import OmegaConf

from unlearn.config import ConfigError, validate
from unlearn.data.mllmu import MLLMUBench
from unlearn.methods.base import LossOutput, Objective
from unlearn.methods.gradient import GradientAscent
from unlearn.models.loading import load_model_and_processor
from unlearn.module import DivergenceError
from unlearn.train import fit

from .conftest import CONF
from .test_pipeline import compose_cfg

TRAINER = OmegaConf.load(f"{CONF}/trainer/cpu.yaml")


def tiny_model():
    model, processor = load_model_and_processor(OmegaConf.create({
        "family": "llava", "source": "tiny", "tiny": {"size": "tiny", "image_size": 64}}))
    return model, processor


def stage(lr: float) -> OmegaConf:
    return OmegaConf.create({"epochs": 1, "batch_size": 2, "loss_scope": "answer",
                             "optim": {"lr": lr, "schedule": "constant"}})


def test_an_exploding_lr_stops_training_at_the_first_non_finite_loss(tiny_bench_dir):
    bench = MLLMUBench(str(tiny_bench_dir), forget_ratio=10, seed=0)
    model, processor = tiny_model()
    with pytest.raises(DivergenceError, match=r"at step [1-9]\d*: loss=(nan|-?inf).* at lr 1e\+30"):
        fit(model, processor, "llava", GradientAscent(), {"forget": bench.forget_train()[:12]},
            stage(1e30), TRAINER, seed=0)


class NaNRetain(Objective):
    """Finite forget term, NaN retain term: the message names the bad part."""

    splits = ("forget",)

    def __call__(self, model, batch, reference=None):
        forget = model(**batch["forget"]).loss
        return LossOutput(forget + float("nan"), {"forget_nll": forget.detach(),
                                                  "retain_nll": torch.tensor(float("nan"))})


def test_the_message_names_the_step_the_non_finite_part_and_the_lr(tiny_bench_dir):
    bench = MLLMUBench(str(tiny_bench_dir), forget_ratio=10, seed=0)
    model, processor = tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(DivergenceError) as err:
        fit(model, processor, "llava", NaNRetain(), {"forget": bench.forget_train()[:4]},
            stage(2e-5), TRAINER, seed=0)
    assert "step 0: loss=nan (retain_nll=nan) at lr 2e-05" in str(err.value)
    assert "forget_nll" not in str(err.value)
    assert all((a == b).all() for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("override, message", [
    ("method.epochs=0", "method.epochs=0 must be an integer >= 1"),
    ("eval.splits=[]", "eval.splits is empty"),
])
def test_settings_that_cannot_unlearn_are_refused(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        validate(compose_cfg(tmp_path, [override]))


def test_method_none_needs_no_epochs(tmp_path):
    validate(compose_cfg(tmp_path, ["method=none"]))
