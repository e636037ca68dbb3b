"""``trainable_modules=lora``: peft LoRA adapters on the language model's linear layers.

Targets are resolved to full module names inside the language group, so the leaf names
(``q_proj``…) never also hit the CLIP / Qwen vision blocks by suffix, as in the official
MLLMU-Bench and Vgid scripts (docs/fidelity.md §1, S1). After training,
:func:`merge_adapters` folds the adapters into the weights: evaluation, generation and
checkpoints then see a plain transformers model (same function up to float rounding).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from unlearn.models.modules import module_groups, select_trainable
from unlearn.utils import plain

# MLLMU-Bench / Vgid / Open-MMUnlearning: r 16, alpha 16, dropout 0.05, gaussian init,
# the attention and MLP projections of every decoder layer.
DEFAULT_TARGETS: tuple[str, ...] = (
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
)


def lora_targets(model: torch.nn.Module, names: Sequence[str]) -> list[str]:
    """Full names of the language model's ``nn.Linear`` modules whose leaf name is in ``names``
    (``lm_head`` excluded: it is tied to the embeddings in the tiny models and LLaVA keeps it)."""
    prefixes = tuple(p for p in module_groups(model)["language"] if not p.endswith("lm_head."))
    targets = [
        name for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.startswith(prefixes)
        and name.rsplit(".", 1)[-1] in set(names)
    ]
    if not targets:
        raise ValueError(f"trainable_modules.lora.target_modules={list(names)} matches no "
                         "linear layer of the language model")
    return targets


def apply_lora(model: torch.nn.Module, r: int = 16, alpha: int = 16, dropout: float = 0.05,
               target_modules: Sequence[str] = DEFAULT_TARGETS,
               init: str | bool = "gaussian") -> PeftModel:
    """Wrap ``model`` in a peft LoRA model (adapters injected in place; base weights frozen)."""
    config = LoraConfig(r=int(r), lora_alpha=int(alpha), lora_dropout=float(dropout),
                        target_modules=lora_targets(model, target_modules),
                        init_lora_weights=init, bias="none")
    return get_peft_model(model, config)


def prepare_trainable(model: torch.nn.Module, trainable_cfg: Mapping[str, Any]
                      ) -> tuple[torch.nn.Module, dict]:
    """Apply a ``trainable_modules`` config: (model to train, trainable/frozen counts).

    For ``scope: lora`` the returned model is the peft wrapper; otherwise ``model`` itself.
    """
    trainable_cfg = plain(trainable_cfg)
    scope = trainable_cfg["scope"]
    if scope == "lora":
        lora = trainable_cfg.get("lora") or {}
        model = apply_lora(model, **lora)
    return model, select_trainable(model, scope)


def merge_adapters(model: torch.nn.Module) -> torch.nn.Module:
    """A plain transformers model: LoRA folded into the weights (no-op without adapters)."""
    if isinstance(model, PeftModel):
        return model.merge_and_unload()
    return model
