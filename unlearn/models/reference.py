"""Frozen reference models for objectives that compare against the pre-unlearning model.

Two kinds, one interface (``reference(**inputs)`` under no_grad, eval mode, ``.viewed`` = the
model run):

* :class:`AdapterDisabledView` — with LoRA the base weights never change, so the reference is
  the student itself with its adapters disabled (peft ``disable_adapter()``): no second copy.
  The view registers no submodule, so freezing or moving it never touches the student.
* :class:`FrozenCopy` — otherwise a deep copy, frozen, that stays in eval mode even when
  Lightning puts the whole LightningModule in train mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from peft import PeftModel


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Every submodule in eval mode for the block, each flag restored afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


class AdapterDisabledView(torch.nn.Module):
    """The pre-unlearning model as the LoRA student with adapters off, in eval mode, no grad."""

    def __init__(self, model: PeftModel):
        super().__init__()
        object.__setattr__(self, "_student", model)  # deliberately not a submodule
        self.eval()

    @property
    def viewed(self) -> PeftModel:
        return self._student

    def train(self, mode: bool = True) -> AdapterDisabledView:
        return super().train(False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad(), eval_mode(self._student), self._student.disable_adapter():
            return self._student(*args, **kwargs)


class FrozenCopy(torch.nn.Module):
    """A deep copy of the pre-unlearning model: no grads, always in eval mode."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.model.requires_grad_(False)
        self.eval()

    @property
    def viewed(self) -> torch.nn.Module:
        return self.model

    def train(self, mode: bool = True) -> FrozenCopy:
        return super().train(False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return self.model(*args, **kwargs)


def has_adapters(model: torch.nn.Module) -> bool:
    return isinstance(model, PeftModel)


def frozen_copy(model: torch.nn.Module) -> FrozenCopy:
    """A frozen deep copy; of a peft model, the base with (untrained) adapters merged away."""
    import copy

    clone = copy.deepcopy(model)
    if isinstance(clone, PeftModel):
        clone = clone.merge_and_unload()
    return FrozenCopy(clone)


def build_reference(model: torch.nn.Module, needs_reference: bool,
                    finetune: Callable[[torch.nn.Module], None] | None = None
                    ) -> torch.nn.Module | None:
    """The reference an objective asks for, as cheap as the student allows.

    ``finetune`` (NPO's ``reference: retain_finetuned``) trains a copy first, so it always
    costs a second model, LoRA or not; without it a LoRA student gives an
    :class:`AdapterDisabledView` and any other student a :class:`FrozenCopy`.
    """
    if not needs_reference:
        return None
    if finetune is not None:
        ref = frozen_copy(model)
        finetune(ref.model)  # sets its own trainable scope
        return FrozenCopy(ref.model)
    if has_adapters(model):
        return AdapterDisabledView(model)
    return frozen_copy(model)


REFERENCE_SOURCES: tuple[str, ...] = ("initial", "retain_finetuned")


def run_reference(cfg: Any, model: torch.nn.Module, objective: Any, bench: Any,
                  processor: Any) -> torch.nn.Module | None:
    """The reference of a pipeline run, from ``method.reference`` (default: ``initial``).

    ``retain_finetuned`` (NPO as MLLMU-Bench runs it) fine-tunes a copy of the pre-unlearning
    model on the retain split with the recipe ``method.reference.finetune`` (not cached).
    """
    spec = cfg.method.get("reference") or {"source": "initial"}
    source = spec.get("source", "initial")
    if source not in REFERENCE_SOURCES:
        raise ValueError(f"method.reference.source={source!r} is not one of "
                         f"{list(REFERENCE_SOURCES)}")
    finetune = None
    if source == "retain_finetuned" and objective.needs_reference:
        from unlearn.methods.gradient import FineTune
        from unlearn.models.modules import select_trainable
        from unlearn.train import fit

        recipe = spec["finetune"]

        def finetune(ref: torch.nn.Module) -> None:
            select_trainable(ref, recipe.trainable)
            fit(ref, processor, cfg.model.family, FineTune(recipe.get("reduction", "token_mean")),
                {"train": bench.retain_train()}, recipe, cfg.trainer, seed=cfg.seed)

    return build_reference(model, objective.needs_reference, finetune)
