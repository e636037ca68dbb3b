"""Build the Lightning trainer, data module and module for one training stage, and fit."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import Dataset

from unlearn import fsdp
from unlearn.data.collate import Collator
from unlearn.data.datamodule import UnlearnDataModule
from unlearn.data.schema import Sample
from unlearn.data.views import PairCollator
from unlearn.methods.base import Objective
from unlearn.module import UnlearnModule
from unlearn.progress import PlainProgress, interactive
from unlearn.resume import ResumeCheckpoints, StopOnSignal, checkpoint_step
from unlearn.utils import plain, set_aside

log = logging.getLogger(__name__)


def trainer_kwargs(trainer_cfg: DictConfig, model: torch.nn.Module) -> dict[str, Any]:
    """Lightning Trainer arguments from the ``trainer`` group (strategy may be a _target_;
    an FSDP strategy gets ``model``'s layers as its units)."""
    kwargs = {k: v for k, v in plain(trainer_cfg).items()
              if k != "name" and k not in fsdp.TRAINER_KEYS}
    if fsdp.is_fsdp(trainer_cfg) and isinstance(kwargs.get("strategy"), dict):
        kwargs["strategy"] = fsdp.build_strategy(trainer_cfg, model)
    elif isinstance(kwargs.get("strategy"), dict):
        kwargs["strategy"] = instantiate(trainer_cfg.strategy)
    return kwargs


def stage_data(processor: Any, family: str, objective: Objective,
               splits: Mapping[str, Sequence[Sample] | Dataset], stage_cfg: DictConfig, *,
               seed: int) -> UnlearnDataModule:
    """The data module of a stage: one collator per split the objective consumes (a
    teacher/student pair collator for the splits in ``objective.views``), in its batch order.

    Separate from :func:`fit` so that a loop without Lightning (``unlearn.bench``) can draw
    exactly the batches the trainer draws.
    """
    views = objective.views  # split -> teacher view (distillation objectives)
    groups = int(stage_cfg.get("length_groups", 1))
    if groups > 1 and not objective.length_groups:
        raise ValueError(f"length_groups={groups}: {type(objective).__name__} takes whole "
                         "batches (length_groups: 1)")
    collate = {name: PairCollator(processor, family, views[name],
                                  loss_scope=stage_cfg.loss_scope) if name in views
               else Collator(processor, family, loss_scope=stage_cfg.loss_scope,
                             length_groups=groups)
               for name in objective.splits}
    return UnlearnDataModule({name: splits[name] for name in objective.splits}, collate,
                             batch_size=int(stage_cfg.batch_size), seed=seed,
                             aligned=objective.aligned, one_pass=objective.one_pass)


def fit(model: torch.nn.Module, processor: Any, family: str, objective: Objective,
        splits: Mapping[str, Sequence[Sample] | Dataset], stage_cfg: DictConfig,
        trainer_cfg: DictConfig, *, seed: int, logger: Any = False,
        reference: torch.nn.Module | None = None,
        callbacks: Sequence[L.Callback] = (), label: str = "train",
        checkpoint: Path | None = None, every_n_steps: int = 0) -> L.Trainer:
    """Train ``model`` in place on ``splits`` with ``objective``.

    ``label`` names the stage in the plain progress lines printed when the output is not a
    terminal (there the live bar is off) and in the message of an interrupted stage.
    ``checkpoint``: where the stage saves its state (every ``every_n_steps`` steps, at the
    end, on SIGTERM/SIGINT) and resumes from when a saved state is there (:mod:`.resume`).
    SIGTERM/SIGINT stop every rank at the end of the same step and raise
    :class:`~unlearn.resume.Interrupted` (:class:`~unlearn.resume.StopOnSignal`).

    ``stage_cfg`` carries epochs, batch_size, loss_scope, optim and optionally
    gradient_checkpointing, backward_per_term and length_groups (a ``method`` node or the
    model's ``vanilla`` node).
    """
    data = stage_data(processor, family, objective, splits, stage_cfg, seed=seed)
    kwargs = trainer_kwargs(trainer_cfg, model)
    module = UnlearnModule(model, objective, plain(stage_cfg.optim), reference=reference,
                           clip_norm=kwargs.get("gradient_clip_val"),
                           per_term=bool(stage_cfg.get("backward_per_term", False)))
    if not module.automatic_optimization:  # the module clips its manual steps itself
        kwargs.pop("gradient_clip_val", None)
    callbacks = list(callbacks)
    resume_from = None
    stop = StopOnSignal(label)  # every rank stops at the same step on SIGTERM/SIGINT
    if checkpoint is not None:
        stop = ResumeCheckpoints(checkpoint, every_n_steps, label)  # ... and saves there
        resume_from = _resumable(checkpoint, label)
    callbacks.append(stop)
    gather = fsdp.FullWeights() if fsdp.is_fsdp(trainer_cfg) else None
    if gather is not None:  # the shards back into whole weights at the end of training
        callbacks.append(gather)
    if not interactive():
        kwargs.setdefault("enable_progress_bar", False)
        callbacks.append(PlainProgress(label))
    trainer = L.Trainer(max_epochs=int(stage_cfg.epochs), logger=logger,
                        use_distributed_sampler=False,  # the data module's samplers shard
                        enable_checkpointing=False, enable_model_summary=False,
                        num_sanity_val_steps=0, callbacks=callbacks, **kwargs)
    module.check_world_size(trainer.world_size)
    checkpointing = bool(stage_cfg.get("gradient_checkpointing", False))
    if checkpointing:  # recompute layer activations in backward: memory for compute
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    threads = torch.get_num_threads()
    if _forks_workers(trainer_cfg):
        # GNU OpenMP is not fork-safe: a forked worker whose parent already ran a parallel
        # region hangs in its first one (here: DDP's first parameter broadcast)
        torch.set_num_threads(1)
    run = partial(trainer.fit, module, datamodule=data, ckpt_path=resume_from,
                  weights_only=True)
    if fsdp.is_fsdp(trainer_cfg) and trainer_cfg.get("activation_checkpointing", False):
        run = partial(_without_cache, module, run)  # the reference too
    try:
        if _forks_workers(trainer_cfg):
            stop.relay(trainer, run)  # this process only waits: it relays signals
        else:
            run()
    finally:
        torch.set_num_threads(threads)
        if gather is not None:  # a plain transformers model again, in one piece
            gather.restore(module)
    model.eval()
    if checkpointing:
        model.gradient_checkpointing_disable()
    if stop.signum:  # arrived after the last step: the stage is complete (and saved)
        raise stop.stopped()
    return trainer


def _without_cache(model: torch.nn.Module, run: partial) -> Any:
    with fsdp.no_cache(model):
        return run()


def _forks_workers(trainer_cfg: DictConfig) -> bool:
    """True when the strategy forks its worker processes from this one (``trainer=ddp_cpu``)."""
    strategy = plain(trainer_cfg).get("strategy")
    return isinstance(strategy, dict) and strategy.get("start_method") == "fork"


def _resumable(checkpoint: Path, label: str) -> Path | None:
    """``checkpoint`` if it holds a readable saved state, else None (an unreadable one is
    moved aside: the stage starts over)."""
    try:
        step = checkpoint_step(checkpoint)
    except Exception as err:  # noqa: BLE001 - any unreadable state is set aside, not fatal
        aside = set_aside(checkpoint)
        log.warning("the saved state of %s, %s, is unreadable (%s: %s); moved it to %s and "
                    "starting the stage over", label, checkpoint, type(err).__name__, err, aside)
        return None
    if step is None:
        return None
    log.info("%s: resuming from step %d saved in %s", label, step, checkpoint)
    return checkpoint
