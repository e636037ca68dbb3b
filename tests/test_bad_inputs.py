"""The bad-input table: every config mistake below fails at validation (before any data is
built or model trained) with one line naming the key, the value and what is allowed.
``tests/test_cli.py`` checks that the command line prints such a line and exits 1."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from unlearn.config import ConfigError, validate

CONF = str(Path(__file__).resolve().parents[1] / "conf")

BAD_INPUTS: list[tuple[list[str], str]] = [
    (["method.batch_size=0"], "method.batch_size=0 must be an integer >= 1"),
    (["method.optim.lr=abc"], "method.optim.lr='abc' must be a number > 0"),
    (["method.optim.lr=-1e-5"], "method.optim.lr=-1e-05 must be a number > 0"),
    (["seed=abc"], "seed='abc' must be an integer >= 0"),
    (["eval.batch_size=0"], "eval.batch_size=0 must be an integer >= 1"),
    (["method.optim.betas=[2,2]"], "method.optim.betas=[2, 2] must be two numbers in [0, 1)"),
    (["trainable_modules=lora", "trainable_modules.lora.r=0"],
     "trainable_modules.lora.r=0 must be a number > 0"),
    (["trainable_modules=lora", "trainable_modules.lora.alpha=-2"],
     "trainable_modules.lora.alpha=-2 must be a number > 0"),
    (["eval.max_new_tokens.generation=-1"],
     "eval.max_new_tokens.generation=-1 must be an integer >= 1"),
    (["method.epochs=0"], "method.epochs=0 must be an integer >= 1"),
    (["eval.splits=[]"], "eval.splits is empty"),
    (["eval.splits=[forget,bogus]"], "eval.splits has ['bogus']"),
    (["resume.every_n_steps=-1"], "resume.every_n_steps=-1 must be an integer >= 0"),
    (["progress.every_s=-1"], "progress.every_s=-1 must be a number >= 0"),
    (["resume.enabled=sometimes"], "resume.enabled='sometimes' must be true or false"),
    (["forget_ratio=7"], "forget_ratio=7 is not one of [5, 10, 15]"),
    (["eval.letter_parser=first"], "eval.letter_parser='first' is not one of"),
    (["model.vanilla.seed=-1"], "model.vanilla.seed=-1 must be an integer >= 0"),
    (["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 must be a number >= 0"),
    (["method.loss_scope=everything"], "method.loss_scope='everything' is not one of"),
    (["perturbation=gaussian", "perturbation.sigma=0"], "perturbation.sigma=0 must be > 0"),
    (["model.vanilla.length_groups=0"], "model.vanilla.length_groups=0 must be an integer >= 1"),
    (["~model.vanilla.trainer.accelerator"],
     "model.vanilla.trainer lacks ['accelerator']: it is the vanilla stage's whole trainer"),
    (["model.vanilla.mcq_warmup.mix=1.5"], "model.vanilla.mcq_warmup.mix=1.5 must be in [0, 1)"),
    (["method=vgid", "method.loss_scope=full"], "method.loss_scope='full' is not one of"),
    (["model.dtype=float64"], "model.dtype='float64' is not one of"),
    (["method.optim.schedule=exponential"], "method.optim.schedule='exponential' is not one of"),
    (["method.optim.weight_decay=-0.1"], "method.optim.weight_decay=-0.1 must be a number >= 0"),
    (["model.vanilla.optim.lr=0"], "model.vanilla.optim.lr=0 must be a number > 0"),
    (["logger=wandb", "logger.mode=sometimes"], "logger.mode='sometimes' is not one of"),
    (["model.vanilla.mcq_warmup.batch_size=0"],
     "model.vanilla.mcq_warmup.batch_size=0 must be an integer >= 1"),
    (["method=npo", "method.reference.source=oracle"],
     "method.reference.source='oracle' is not one of"),
    (["eval.relearn.fraction=1.5"], "eval.relearn.fraction=1.5 must be a number in (0, 1)"),
    (["eval.relearn.fraction=0"], "eval.relearn.fraction=0 must be a number in (0, 1)"),
    (["eval.relearn.fraction=half"], "eval.relearn.fraction='half' must be a number in (0, 1)"),
    (["eval.relearn.steps=0"], "eval.relearn.steps=0 must be an integer >= 1"),
    (["eval.relearn.batch_size=2.5"], "eval.relearn.batch_size=2.5 must be an integer >= 1"),
    (["eval.relearn.optim.lr=0"], "eval.relearn.optim.lr=0 must be a number > 0"),
    (["eval.relearn.optim.weight_decay=-1"],
     "eval.relearn.optim.weight_decay=-1 must be a number >= 0"),
    (["eval.relearn.optim.warmup_steps=-2"],
     "eval.relearn.optim.warmup_steps=-2 must be an integer >= 0"),
    (["eval.relearn.optim.betas=[0.9,1.0]"],
     "eval.relearn.optim.betas=[0.9, 1.0] must be two numbers in [0, 1)"),
    (["eval.relearn.optim.schedule=step"], "eval.relearn.optim.schedule='step' is not one of"),
    (["eval.relearn.trainable=none"], "eval.relearn.trainable='none' is not one of"),
    (["eval.relearn.loss_scope=prompt"], "eval.relearn.loss_scope='prompt' is not one of"),
    (["eval.relearn.reduction=sum"], "eval.relearn.reduction='sum' is not one of"),
    (["eval.relearn.control=maybe"], "eval.relearn.control='maybe' must be true or false"),
    (["eval.attack=relearn", "eval.splits=[retain]"],
     "eval.splits=['retain'] must hold 'forget' with eval.attack=relearn"),
    (["logger=wandb", "logger.samples=-1"], "logger.samples=-1 must be an integer >= 0"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_INPUTS,
                         ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_fails_validation_with_one_line(overrides, message):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_an_unknown_group_option_is_refused_by_hydra_with_the_options():
    with initialize_config_dir(config_dir=CONF, version_base="1.3"), \
            pytest.raises(ConfigCompositionException):
        compose("config", overrides=["method=foo"])
