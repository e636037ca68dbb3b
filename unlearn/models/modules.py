"""Parameter groups per architecture and the ``trainable_modules`` scopes built from them.

Groups (transformers 5.x layout, G9):

* ``vision``: the vision encoder without its projector (LLaVA ``model.vision_tower``; Qwen
  ``model.visual`` minus ``merger``).
* ``projector``: LLaVA ``model.multi_modal_projector``; Qwen ``model.visual.merger``.
* ``language``: ``model.language_model`` **and** ``lm_head``. Token embeddings and the output head
  are text-side weights that LLaVA-1.5 / Qwen train with the LM (image positions take projector
  outputs, not embeddings), so "language" unlearning must be able to change them.

A scope is a tuple of groups (``lm_connector`` = language + projector), so a new scope is one
entry in :data:`SCOPES`. ``lora`` is the group of peft adapter weights (matched by name before
the prefix groups in :func:`group_of`); :func:`unlearn.models.lora.prepare_trainable` adds the
adapters before selecting it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from transformers import PreTrainedModel

from unlearn.models.families import ARCHS

GROUPS: tuple[str, ...] = ("vision", "projector", "language")
OTHER = "other"  # parameters no group claims (e.g. added by a wrapper); trained by "all" only
LORA_MARK = ".lora_"  # peft LoRA parameter names: lora_A, lora_B, lora_embedding_A, ...
SCOPES: dict[str, tuple[str, ...]] = {
    "all": (*GROUPS, OTHER),
    "vision": ("vision", "projector"),
    "language": ("language",),
    "lm_connector": ("language", "projector"),
    "projector": ("projector",),
    "none": (),
    "lora": ("lora",),  # peft adapters on the language model (unlearn.models.lora)
}


def _unwrap(model: torch.nn.Module) -> tuple[PreTrainedModel, str]:
    """The outermost transformers model inside wrappers (peft) and the name prefix leading to it."""
    for name, module in model.named_modules():
        if isinstance(module, PreTrainedModel):
            return module, f"{name}." if name else ""
    raise TypeError(f"no transformers PreTrainedModel inside {type(model).__name__}")


def inner_model(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers model inside any wrapper (peft)."""
    return _unwrap(model)[0]


def model_family(model: torch.nn.Module) -> str:
    """``llava`` / ``qwen2_vl`` / ``qwen2_5_vl`` from the config, through any wrapper."""
    family = _unwrap(model)[0].config.model_type
    if family not in ARCHS:
        raise ValueError(f"unsupported model_type {family!r}; allowed: {list(ARCHS)}")
    return family


def module_groups(model: torch.nn.Module) -> dict[str, list[str]]:
    """Parameter-name prefixes (ending in ``.``) of each group, as ``named_parameters`` spells them.

    Qwen's vision prefixes are the children of ``model.visual`` other than ``merger`` that hold
    parameters, so the vision and projector groups stay disjoint.
    """
    inner, prefix = _unwrap(model)
    if model_family(model) == "llava":
        groups = {
            "vision": ["model.vision_tower."],
            "projector": ["model.multi_modal_projector."],
        }
    else:
        groups = {
            "vision": [
                f"model.visual.{name}."
                for name, child in inner.model.visual.named_children()
                if name != "merger" and any(True for _ in child.parameters())
            ],
            "projector": ["model.visual.merger."],
        }
    groups["language"] = ["model.language_model.", "lm_head."]
    return {group: [prefix + p for p in prefixes] for group, prefixes in groups.items()}


def group_of(name: str, groups: dict[str, list[str]]) -> str:
    """The group a parameter name belongs to; :data:`OTHER` for names no group claims.

    LoRA adapter weights (``….lora_A.default.weight``) form the ``lora`` group whatever module
    they sit in, so the ``lora`` scope trains exactly the adapters.
    """
    if LORA_MARK in name:
        return "lora"
    return next((g for g, prefixes in groups.items() if name.startswith(tuple(prefixes))), OTHER)


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The language model's decoder layers (LLaVA and Qwen2-VL alike), through any wrapper."""
    inner, _ = _unwrap(model)
    return inner.model.language_model.layers


def vision_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The vision tower's transformer layers (LLaVA CLIP encoder layers, Qwen vision blocks)."""
    inner, _ = _unwrap(model)
    if model_family(model) == "llava":
        tower = inner.model.vision_tower
        return getattr(tower, "vision_model", tower).encoder.layers
    return inner.model.visual.blocks


def vision_projector(model: torch.nn.Module) -> torch.nn.Module:
    """The module that maps vision features to the language model's width (the projector
    group): LLaVA ``multi_modal_projector``, Qwen ``visual.merger``."""
    inner, _ = _unwrap(model)
    if model_family(model) == "llava":
        return inner.model.multi_modal_projector
    return inner.model.visual.merger


def vision_layers_in_use(model: torch.nn.Module) -> int:
    """How many vision layers, from the first, reach the projector: LLaVA reads
    ``hidden_states[vision_feature_layer]`` (-2 for LLaVA-1.5: every layer but the last),
    Qwen the last block."""
    inner, _ = _unwrap(model)
    if model_family(model) != "llava":
        return len(vision_layers(model))
    layers = inner.config.vision_config.num_hidden_layers
    selected = inner.config.vision_feature_layer
    selected = [selected] if isinstance(selected, int) else list(selected)
    return max(k if k >= 0 else layers + 1 + k for k in selected)


def unused_parameters(model: torch.nn.Module) -> list[str]:
    """Names of parameters that never receive gradients by construction (G1).

    LLaVA takes image features from ``hidden_states[vision_feature_layer]`` of CLIP (-2 for
    LLaVA-1.5), so the encoder layers after it and ``post_layernorm`` (pooled output only) are
    unused. Plain DDP fails on them unless they are frozen. Qwen uses every parameter.
    """
    if model_family(model) != "llava":
        return []
    inner, prefix = _unwrap(model)
    layers = inner.config.vision_config.num_hidden_layers
    n_used = vision_layers_in_use(model)
    tower = f"{prefix}model.vision_tower."
    unused = [f"{tower}post_layernorm."] + [
        f"{tower}encoder.layers.{i}." for i in range(n_used, layers)
    ]
    return [name for name, _ in model.named_parameters() if name.startswith(tuple(unused))]


def select_trainable(model: torch.nn.Module, scope: str) -> dict:
    """Set ``requires_grad`` for a scope and freeze :func:`unused_parameters` in every scope.

    Returns element counts ``{"trainable": n, "frozen": n, "by_group": {group: {"trainable": n,
    "frozen": n}}}``; ``by_group`` lists :data:`OTHER` only when some parameter falls in it.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown trainable scope {scope!r}; allowed: {list(SCOPES)}")
    groups = module_groups(model)
    unused = set(unused_parameters(model))
    by_group = {g: {"trainable": 0, "frozen": 0} for g in GROUPS}
    for name, param in model.named_parameters():
        group = group_of(name, groups)
        train = group in SCOPES[scope] and name not in unused
        param.requires_grad_(train)
        counts = by_group.setdefault(group, {"trainable": 0, "frozen": 0})
        counts["trainable" if train else "frozen"] += param.numel()
    return {
        "trainable": sum(c["trainable"] for c in by_group.values()),
        "frozen": sum(c["frozen"] for c in by_group.values()),
        "by_group": by_group,
    }


@contextmanager
def captured(modules: Sequence[torch.nn.Module]) -> Iterator[list]:
    """Record each module's output (the first element of a tuple output), in order, while
    the context is open (forward hooks, removed on exit)."""
    store: list = [None] * len(modules)

    def hook(index):
        def record(_module, _inputs, output):
            store[index] = output[0] if isinstance(output, tuple) else output
        return record

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(modules)]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()
