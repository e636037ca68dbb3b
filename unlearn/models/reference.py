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

from unlearn.errors import UserError


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
                    finetune: Callable[[torch.nn.Module], None] | None = None,
                    start: Callable[[], torch.nn.Module] | None = None
                    ) -> torch.nn.Module | None:
    """The reference an objective asks for, as cheap as the student allows.

    ``finetune`` (NPO's ``reference: retain_finetuned``) trains a model first, so it always
    costs a second model, LoRA or not: the one ``start`` builds (MLLMU-Bench's oracle: the base
    model before the vanilla fine-tune), else a copy of ``model``. Without ``finetune`` a
    LoRA student gives an :class:`AdapterDisabledView` and any other student a
    :class:`FrozenCopy`.
    """
    if not needs_reference:
        return None
    if finetune is not None:
        ref = start() if start is not None else frozen_copy(model).model
        finetune(ref)  # sets its own trainable scope
        return FrozenCopy(ref)
    if has_adapters(model):
        return AdapterDisabledView(model)
    return frozen_copy(model)


REFERENCE_SOURCES: tuple[str, ...] = ("initial", "retain_finetuned")
# where retain_finetuned starts: base = the model before the vanilla fine-tune (MLLMU-Bench's
# oracle), vanilla = a copy of the pre-unlearning model (it already knows the forget people)
REFERENCE_STARTS: tuple[str, ...] = ("base", "vanilla")


def same_vocabulary(base_processor: Any, processor: Any) -> None:
    """Raise unless the base model's tokenizer maps every token as the student's does: the
    reference scores the student's token ids."""
    if base_processor.tokenizer.get_vocab() != processor.tokenizer.get_vocab():
        raise UserError("method.reference.finetune.start=base: the base model's tokenizer "
                        "differs from the pre-unlearning model's (added or other tokens), so "
                        "it cannot score the same token ids; use "
                        "method.reference.finetune.start=vanilla or a matching base")


def run_reference(cfg: Any, model: torch.nn.Module, objective: Any, bench: Any,
                  processor: Any) -> tuple[torch.nn.Module | None, dict[str, Any]]:
    """The reference of a pipeline run, from ``method.reference`` (default: ``initial``), and
    what the manifest records of it.

    ``retain_finetuned`` is NPO's reference as MLLMU-Bench runs it (its "oracle"): the
    off-the-shelf base model before the vanilla fine-tune (``method.reference.finetune.start
    =base``: ``model.pretrained_id``, or the tiny model as built before the vanilla stage, with
    the same tokenizer), fine-tuned on the retain split with the recipe
    ``method.reference.finetune`` (not cached). ``start=vanilla`` fine-tunes a copy of the
    pre-unlearning model instead: that model already knows the forget people, so it is not
    MLLMU-Bench's oracle.
    """
    spec = cfg.method.get("reference") or {"source": "initial"}
    source = spec.get("source", "initial")
    if source not in REFERENCE_SOURCES:
        raise ValueError(f"method.reference.source={source!r} is not one of "
                         f"{list(REFERENCE_SOURCES)}")
    if not objective.needs_reference:
        return None, {}
    if source == "initial":
        return build_reference(model, True), {"reference": {"source": source}}
    from unlearn.methods.gradient import FineTune
    from unlearn.models.modules import select_trainable
    from unlearn.train import fit
    from unlearn.vanilla import base_model

    recipe = spec["finetune"]
    start_from = recipe.get("start", "base")
    if start_from not in REFERENCE_STARTS:
        raise ValueError(f"method.reference.finetune.start={start_from!r} is not one of "
                         f"{list(REFERENCE_STARTS)}")
    retain = bench.train_set("retain")
    info: dict[str, Any] = {"source": source, "start": start_from, "retain_items": len(retain)}
    start = None
    if start_from == "base":
        mcfg = cfg.model
        info["base"] = (f"tiny (model.tiny.seed={(mcfg.get('tiny') or {}).get('seed', 0)})"
                        if mcfg.get("source") == "tiny" else str(mcfg.pretrained_id))

        def start() -> torch.nn.Module:
            base, base_processor = base_model(cfg, bench)
            same_vocabulary(base_processor, processor)
            return base

    def finetune(ref: torch.nn.Module) -> None:
        select_trainable(ref, recipe.trainable)
        fit(ref, processor, cfg.model.family, FineTune(recipe.get("reduction", "token_mean")),
            {"train": retain}, recipe, cfg.trainer, seed=cfg.seed)

    return build_reference(model, True, finetune, start), {"reference": info}
