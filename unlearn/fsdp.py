"""Fully sharded data parallel (FSDP) for the training stages: which layers become FSDP units,
a CPU variant of Lightning's strategy (for tests), what is refused before anything is built,
and the model back in one piece after training (docs/scaling.md, "FSDP").

Lightning wraps the whole LightningModule: the student and a frozen reference
(:class:`~unlearn.models.reference.FrozenCopy`, ``requires_grad=False``) are sharded alike; with
``use_orig_params`` frozen and trainable parameters may share a unit and the optimizer sees
the original parameters.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch.strategies import FSDPStrategy
from omegaconf import DictConfig, OmegaConf
from torch.distributed.fsdp import FullStateDictConfig, StateDictType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from torch.distributed.fsdp.wrap import ModuleWrapPolicy

from unlearn.errors import UserError
from unlearn.models.modules import decoder_layers, vision_layers
from unlearn.utils import plain

# trainer keys of ours, not Lightning Trainer arguments
TRAINER_KEYS: tuple[str, ...] = ("activation_checkpointing",)

# objective class -> why it cannot train under FSDP (checked before anything is built)
REFUSED_METHODS: dict[str, str] = {
    "MMUnlearner": "its gradient masks are shaped like the whole parameters and applied "
                   "through torch.func.functional_call, which swaps the parameters FSDP "
                   "gathers and shards",
    "VKD": "its teacher is a snapshot of the trainable parameters swapped in with "
           "torch.func.functional_call (and its saliency masks are shaped like whole "
           "parameters), which FSDP's sharded parameters do not allow",
}


class FSDPError(UserError, ValueError):
    """A method or setting that cannot train under FSDP."""


def is_fsdp(trainer_cfg: DictConfig | Mapping[str, Any] | None) -> bool:
    """True when the trainer's strategy is Lightning's FSDPStrategy (by name or ``_target_``)."""
    strategy = plain(trainer_cfg).get("strategy") if trainer_cfg is not None else None
    if isinstance(strategy, str):
        return strategy.startswith("fsdp")
    if isinstance(strategy, dict) and "_target_" in strategy:
        return issubclass(get_class(strategy["_target_"]), FSDPStrategy)
    return False


def layer_classes(model: torch.nn.Module) -> dict[str, set[type[torch.nn.Module]]]:
    """The classes of the language model's decoder layers and of the vision tower's layers
    (LLaVA: LlamaDecoderLayer / CLIPEncoderLayer; Qwen2-VL and Qwen2.5-VL: their text
    decoder layers / vision blocks), read from the loaded model."""
    return {"decoder": {type(layer) for layer in decoder_layers(model)},
            "vision": {type(layer) for layer in vision_layers(model)}}


def unit_classes(model: torch.nn.Module) -> set[type[torch.nn.Module]]:
    """The layers that become FSDP units: the decoder layers only.

    The vision tower stays in the root unit, which every rank gathers at every step: a batch
    without images skips the vision tower, and with its layers as units of their own a rank
    with images would gather them while one without does not, and both wait forever (measured
    with 2 CPU ranks: the run hung at the first such step).
    """
    return layer_classes(model)["decoder"]


def build_strategy(trainer_cfg: DictConfig, model: torch.nn.Module) -> FSDPStrategy:
    """The trainer's FSDP strategy with the model's decoder layers as units (and, with
    ``trainer.activation_checkpointing``, checkpointed)."""
    units = unit_classes(model)
    extra: dict[str, Any] = {"auto_wrap_policy": ModuleWrapPolicy(units)}
    if trainer_cfg.get("activation_checkpointing", False):
        extra["activation_checkpointing_policy"] = ModuleWrapPolicy(units)
    return instantiate(trainer_cfg.strategy, **extra)


@contextmanager
def no_cache(model: torch.nn.Module) -> Iterator[None]:
    """``use_cache=False`` in every config of ``model`` for the block (restored after).

    transformers turns the KV cache off itself only under its own gradient checkpointing;
    under FSDP's checkpoint wrapper a recomputed layer appended its keys to the cache a
    second time (measured: a size mismatch, keys of twice the length, in the backward).
    """
    configs = {id(c): c for m in model.modules()
               if (c := getattr(m, "config", None)) is not None and hasattr(c, "use_cache")}
    saved = {key: c.use_cache for key, c in configs.items()}
    for c in configs.values():
        c.use_cache = False
    try:
        yield
    finally:
        for key, c in configs.items():
            c.use_cache = saved[key]


class CPUFSDPStrategy(FSDPStrategy):
    """Lightning's FSDPStrategy on CPU processes (gloo): the code path of GPU runs, testable
    without a GPU.

    Lightning refuses ``FSDPStrategy`` itself without a GPU accelerator (an exact type check
    that a subclass passes), and passes ``device_id=None`` for a CPU device, which torch's
    FSDP refuses ("FSDP needs a non-CPU accelerator device"); wrapping the root here with
    ``device_id=cpu`` leaves Lightning only the rest of its setup.
    """

    def _setup_model(self, model: torch.nn.Module) -> torch.nn.Module:
        policy = self.kwargs.pop("auto_wrap_policy", None)
        model = FSDP(model, device_id=torch.device("cpu"), auto_wrap_policy=policy,
                     sharding_strategy=self.sharding_strategy, cpu_offload=self.cpu_offload,
                     mixed_precision=self.mixed_precision_config, **self.kwargs)
        return super()._setup_model(model)


class FullWeights(L.Callback):
    """Gathers every rank's shards into whole tensors at the end of training (while the
    process group and devices are still up: Lightning's teardown moves the module to CPU
    before ``on_fit_end``); :meth:`restore` puts them back into the unwrapped model."""

    def __init__(self) -> None:
        self.state: dict[str, torch.Tensor] | None = None

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        root = trainer.strategy.model
        # every rank keeps a copy (in CPU memory): a later stage on every rank (NPO's
        # retain-finetuned reference, then unlearning) starts from the whole weights.
        # Offloading tensors already on the CPU crashed (a segfault cloning freed memory).
        offload = trainer.strategy.root_device.type != "cpu"
        config = FullStateDictConfig(offload_to_cpu=offload, rank0_only=False)
        with FSDP.state_dict_type(root, StateDictType.FULL_STATE_DICT, config):
            self.state = root.state_dict()

    def restore(self, module: torch.nn.Module) -> None:
        """Replace every FSDP (and activation-checkpoint) wrapper inside ``module`` by the
        module it wraps and give each parameter its whole tensor (the same parameter
        objects: tied weights stay tied; FSDP does not shard buffers)."""
        unwrap(module)
        if self.state is None:  # training stopped before its end (an exception): no weights
            return
        for name, param in module.named_parameters():
            param.data = self.state[name].to(param.device)
        self.state = None


# what torch's FSDP marks every managed submodule with (for torch.compile); transformers'
# generate() reads the first as "FSDP: synchronise every rank's decoding" and waits for ranks
# that are not generating
FSDP_MARKS: tuple[str, ...] = ("_is_fsdp_managed_module", "_fsdp_use_orig_params")


def unwrap(module: torch.nn.Module) -> None:
    """Replace, in place, each FSDP unit and checkpoint wrapper by the module it wraps, and
    remove FSDP's marks from every submodule."""
    for parent in list(module.modules()):
        for mark in FSDP_MARKS:
            parent.__dict__.pop(mark, None)
        for name, child in list(parent.named_children()):
            inner = child
            while hasattr(inner, "_fsdp_wrapped_module") or hasattr(
                    inner, "_checkpoint_wrapped_module"):
                inner = getattr(inner, "_fsdp_wrapped_module", None) or \
                    inner._checkpoint_wrapped_module
            if inner is not child:
                parent._modules[name] = inner


def check(cfg: DictConfig) -> None:
    """Refuse, in one line, a method or setting of the unlearning stage that cannot train
    under an FSDP ``trainer`` (before any data or model is built)."""
    if not is_fsdp(cfg.trainer):
        return
    target = OmegaConf.select(cfg, "method.objective._target_", default=None)
    if target is None:  # method=none / icu: nothing trains
        return
    name = target.rsplit(".", 1)[-1]
    if name in REFUSED_METHODS:
        raise FSDPError(f"method={cfg.method.name!r} cannot train under "
                        f"trainer={cfg.trainer.name!r} (FSDP): {REFUSED_METHODS[name]}; use "
                        "trainer=ddp or a single device")
    if cfg.method.get("backward_per_term", False):
        raise FSDPError("method.backward_per_term=true cannot train under FSDP (manual "
                        "optimisation: several backward passes per step); set it to false")
    if cfg.method.get("gradient_checkpointing", False):
        raise FSDPError("method.gradient_checkpointing=true under FSDP: use "
                        "trainer.activation_checkpointing=true instead (FSDP's checkpoint "
                        "wrapper on the same decoder layers)")
