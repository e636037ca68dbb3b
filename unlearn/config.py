"""Early validation of the composed config: a bad value names its key and the allowed ones.

Hydra already rejects unknown group options (``method=foo``) with the list of options; this
covers the values inside groups.
"""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from unlearn import fsdp
from unlearn.data.collate import LOSS_SCOPES
from unlearn.data.configured import benchmark_class
from unlearn.data.perturb import PERTURBATIONS
from unlearn.data.prompts import FAMILIES, ICU_PROMPTS
from unlearn.data.views import ATTACKS, INTERVENTIONS
from unlearn.errors import UserError
from unlearn.eval.metrics import LETTER_PARSERS, REGISTRY
from unlearn.methods.distill import KL_POSITIONS
from unlearn.methods.losses import REDUCTIONS
from unlearn.methods.mmunlearner import PRESERVE_TEXT
from unlearn.methods.mmunlearner import SCHEDULES as MMU_SCHEDULES
from unlearn.methods.rmu import DIRECTIONS, TARGET_NORMS
from unlearn.methods.vkd import DISTANCES, MASK_TERMS, OUTPUT_TERMS
from unlearn.models.loading import DTYPES, SOURCES
from unlearn.models.modules import SCOPES
from unlearn.models.reference import REFERENCE_SOURCES, REFERENCE_STARTS
from unlearn.module import SCHEDULES
from unlearn.report.spec import parse_report

CHOICES: dict[str, tuple] = {
    "model.family": FAMILIES,
    "model.source": SOURCES,
    "model.dtype": DTYPES,
    "model.vanilla.trainable": tuple(s for s in SCOPES if s != "lora"),  # full-weight stage
    "model.vanilla.loss_scope": LOSS_SCOPES,
    "model.vanilla.reduction": ("token_mean", "sequence_mean"),
    "model.vanilla.optim.schedule": SCHEDULES,
    "method.loss_scope": LOSS_SCOPES,
    "method.optim.schedule": SCHEDULES,
    "trainable_modules.scope": SCOPES,
    "eval.letter_parser": LETTER_PARSERS,
    "logger.name": ("csv", "wandb", "none"),
    "perturbation.name": PERTURBATIONS,
    "prompt_style.name": tuple(ICU_PROMPTS),
    "eval.intervention": INTERVENTIONS,
    "eval.attack": ATTACKS,
}
OPTIONAL_CHOICES: dict[str, tuple] = {
    "logger.mode": ("auto", "online", "offline"),
    "method.objective.kl_positions": KL_POSITIONS,
    "method.objective.reduction": REDUCTIONS,
    "method.objective.kl_reduction": REDUCTIONS,
    "method.objective.target_norm": TARGET_NORMS,
    "method.objective.direction": DIRECTIONS,
    "method.objective.distance": DISTANCES,
    "method.objective.output_term": OUTPUT_TERMS,
    "method.objective.mask_terms": MASK_TERMS,
    "method.reference.source": REFERENCE_SOURCES,
    "method.reference.finetune.trainable": tuple(s for s in SCOPES if s != "lora"),
    "method.reference.finetune.start": REFERENCE_STARTS,
    "method.schedule": MMU_SCHEDULES,
    "method.objective.preserve_text": PRESERVE_TEXT,
    "model.vanilla.mcq_warmup.schedule": SCHEDULES,
    "eval.relearn.trainable": tuple(s for s in SCOPES if s != "none"),
    "eval.relearn.loss_scope": LOSS_SCOPES,
    "eval.relearn.reduction": REDUCTIONS,
    "eval.relearn.optim.schedule": SCHEDULES,
}


# Numbers every run uses, checked before any data is built or model trained. ``method.*`` keys
# apply only when the method trains (method=none/icu carry placeholders); absent optional keys
# (e.g. a model without a warm-up) are skipped.
POSITIVE_INTS: tuple[str, ...] = (
    "method.epochs", "method.batch_size", "eval.batch_size", "model.vanilla.epochs",
    "model.vanilla.batch_size", "model.vanilla.mcq_warmup.batch_size",
    "method.reference.finetune.epochs", "method.reference.finetune.batch_size",
    "eval.relearn.steps", "eval.relearn.batch_size",
)
NON_NEGATIVE_INTS: tuple[str, ...] = (
    "seed", "model.vanilla.seed", "resume.every_n_steps", "method.optim.warmup_steps",
    "model.vanilla.optim.warmup_steps", "model.vanilla.mcq_warmup.steps",
    "eval.relearn.optim.warmup_steps", "logger.samples",
)
POSITIVE_FLOATS: tuple[str, ...] = (
    "method.optim.lr", "model.vanilla.optim.lr", "model.vanilla.mcq_warmup.lr",
    "method.reference.finetune.optim.lr", "eval.relearn.optim.lr",
)
NON_NEGATIVE_FLOATS: tuple[str, ...] = (
    "method.optim.weight_decay", "model.vanilla.optim.weight_decay", "trainer.gradient_clip_val",
    "eval.relearn.optim.weight_decay", "progress.every_s",
)
BETAS: tuple[str, ...] = ("method.optim.betas", "model.vanilla.optim.betas",
                          "eval.relearn.optim.betas")
LORA_POSITIVE: tuple[str, ...] = ("trainable_modules.lora.r", "trainable_modules.lora.alpha")


# What the vanilla stage's own trainer must name: where and in which precision it trains.
VANILLA_TRAINER = ("accelerator", "devices", "strategy", "precision")


class ConfigError(UserError, ValueError):
    """A config value outside its allowed set."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_numbers(cfg: DictConfig) -> None:
    """Types and ranges of :data:`POSITIVE_INTS` and the other tables (one line per error)."""
    trains = OmegaConf.select(cfg, "method.objective") is not None

    def applies(key: str) -> bool:
        return trains or not key.startswith("method.")

    rules = (
        (POSITIVE_INTS, _is_int, lambda v: v >= 1, "an integer >= 1"),
        (NON_NEGATIVE_INTS, _is_int, lambda v: v >= 0, "an integer >= 0"),
        (POSITIVE_FLOATS, _is_number, lambda v: v > 0, "a number > 0"),
        (NON_NEGATIVE_FLOATS, _is_number, lambda v: v >= 0, "a number >= 0"),
    )
    for keys, typed, in_range, what in rules:
        for key in filter(applies, keys):
            value = OmegaConf.select(cfg, key, default=None)
            if value is not None and not (typed(value) and in_range(value)):
                raise ConfigError(f"{key}={value!r} must be {what}")
    for key in filter(applies, BETAS):
        betas = OmegaConf.select(cfg, key, default=None)
        if betas is not None and not (len(betas) == 2 and all(
                _is_number(b) and 0 <= b < 1 for b in betas)):
            raise ConfigError(f"{key}={list(betas)!r} must be two numbers in [0, 1)")
    if cfg.trainable_modules.scope == "lora":
        for key in LORA_POSITIVE:
            value = OmegaConf.select(cfg, key, default=None)
            if not (_is_number(value) and value > 0):
                raise ConfigError(f"{key}={value!r} must be a number > 0")


def validate(cfg: DictConfig) -> None:
    _check_numbers(cfg)
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key, default="<missing>")
        if key.startswith("method.optim") and OmegaConf.select(cfg, "method.objective") is None:
            continue
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {list(allowed)}")
    for key, allowed in OPTIONAL_CHOICES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {list(allowed)}")
    if cfg.perturbation.name == "gaussian" and not float(cfg.perturbation.sigma) > 0:
        raise ConfigError(f"perturbation.sigma={cfg.perturbation.sigma!r} must be > 0")
    kl = OmegaConf.select(cfg, "method.objective.kl_positions", default=None)
    if kl is not None and cfg.method.loss_scope != "answer":
        raise ConfigError(f"method.loss_scope={cfg.method.loss_scope!r} is not one of "
                          "['answer'] for distillation (method.objective.kl_positions picks "
                          "the compared positions)")
    for key in ("model.vanilla.length_groups", "model.vanilla.mcq_warmup.length_groups"):
        groups = OmegaConf.select(cfg, key, default=1)
        if not isinstance(groups, int) or groups < 1:
            raise ConfigError(f"{key}={groups!r} must be an integer >= 1")
    own = OmegaConf.select(cfg, "model.vanilla.trainer", default=None)
    missing = own is not None and [k for k in VANILLA_TRAINER if k not in own]
    if missing:  # partial settings would take Lightning's defaults (accelerator: auto)
        raise ConfigError(f"model.vanilla.trainer lacks {missing}: it is the vanilla stage's "
                          f"whole trainer and names {list(VANILLA_TRAINER)} (null: the run's "
                          "trainer)")
    mix = OmegaConf.select(cfg, "model.vanilla.mcq_warmup.mix", default=0.0)
    if not 0 <= float(mix) < 1:
        raise ConfigError(f"model.vanilla.mcq_warmup.mix={mix!r} must be in [0, 1)")
    if not isinstance(OmegaConf.select(cfg, "resume.enabled", default=None), bool):
        raise ConfigError(f"resume.enabled={OmegaConf.select(cfg, 'resume.enabled')!r} must "
                          "be true or false")
    _check_benchmark(cfg)
    _check_relearn(cfg)
    fsdp.check(cfg)  # methods and settings that cannot shard
    if OmegaConf.select(cfg, "report") is not None:  # an experiment's layout: before any job
        parse_report(cfg.report)


def _check_benchmark(cfg: DictConfig) -> None:
    """``forget_ratio`` and ``eval.splits`` against what the chosen benchmark defines, and the
    ``eval`` group's metrics against the registry (nothing is built before this passes)."""
    bench = benchmark_class(cfg)
    ratios = bench.forget_ratios
    if cfg.forget_ratio not in ratios:
        raise ConfigError(f"forget_ratio={cfg.forget_ratio!r} is not one of {list(ratios)} "
                          f"(the forget ratios of data={cfg.data.name!r})")
    splits = bench.eval_split_names
    if not cfg.eval.splits:
        raise ConfigError(f"eval.splits is empty; allowed: a non-empty subset of {list(splits)}")
    bad = [s for s in cfg.eval.splits if s not in splits]
    if bad:
        raise ConfigError(f"eval.splits has {bad}; allowed for data={cfg.data.name!r}: "
                          f"{list(splits)}")
    metrics = cfg.eval.get("metrics") or {}
    if not metrics:
        raise ConfigError("eval.metrics is empty: map each evaluated task to metric names of "
                          f"{list(REGISTRY)}")
    for task, names in metrics.items():
        unknown = [m for m in names if m not in REGISTRY]
        if unknown:
            raise ConfigError(f"eval.metrics.{task} has {unknown}; allowed: {list(REGISTRY)}")
        tokens = OmegaConf.select(cfg, f"eval.max_new_tokens.{task}", default=None)
        if not (_is_int(tokens) and tokens >= 1):
            raise ConfigError(f"eval.max_new_tokens.{task}={tokens!r} must be an integer >= 1")
    scored = {m for names in metrics.values() for m in names}
    unscored = [m for m in cfg.eval.get("table") or {} if m not in scored]
    if unscored:
        raise ConfigError(f"eval.table shows {unscored}, which eval.metrics does not score "
                          f"(it scores {sorted(scored)})")
    lk = cfg.eval.get("likelihood") or {}
    if lk.get("enabled"):
        if lk.get("task") not in metrics:
            raise ConfigError(f"eval.likelihood.task={lk.get('task')!r} is not one of the "
                              f"evaluated tasks {list(metrics)}")
        unscored = [m for m in lk.get("utility") or () if m not in scored]
        if unscored:
            raise ConfigError(f"eval.likelihood.utility has {unscored}, which eval.metrics "
                              f"does not score (it scores {sorted(scored)})")
        if lk.get("forget_quality") and bench.forget_split not in cfg.eval.splits:
            raise ConfigError(f"eval.likelihood.forget_quality needs the {bench.forget_split!r} "
                              f"split in eval.splits={list(cfg.eval.splits)}")


def _check_relearn(cfg: DictConfig) -> None:
    """``eval.relearn``: the values outside the number tables (absent node: nothing to check)."""
    fraction = OmegaConf.select(cfg, "eval.relearn.fraction", default=None)
    if fraction is not None and not (_is_number(fraction) and 0 < fraction < 1):
        raise ConfigError(f"eval.relearn.fraction={fraction!r} must be a number in (0, 1)")
    control = OmegaConf.select(cfg, "eval.relearn.control", default=False)
    if not isinstance(control, bool):
        raise ConfigError(f"eval.relearn.control={control!r} must be true or false")
    if cfg.eval.attack == "relearn" and "forget" not in cfg.eval.splits:
        raise ConfigError(f"eval.splits={list(cfg.eval.splits)!r} must hold 'forget' with "
                          "eval.attack=relearn (it scores the held-out forget people)")


def build_objective(cfg: DictConfig) -> Any:
    """The method's objective (None for methods that only evaluate). It checks its own
    hyperparameters; a value it refuses (or an argument it does not take) is a ConfigError
    naming the method, before anything expensive runs."""
    if cfg.method.objective is None:
        return None
    try:
        return instantiate(cfg.method.objective)
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ValueError | TypeError):
            raise ConfigError(f"method={cfg.method.name!r}: {cause}") from err
        raise
