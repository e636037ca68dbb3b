"""Checks of a Slurm sweep before it is submitted (``hydra/launcher=slurm``).

A value Slurm would reject, or a job shape Lightning would refuse once the job starts (hours
later, in a queue), fails here with one line naming the key: the launcher's options, and the
rule that every trainer of a Slurm job spans all its tasks — Lightning's ``SLURMEnvironment``
takes one rank per task and requires ``trainer.devices`` = tasks per node and
``trainer.num_nodes`` = nodes.
"""

from __future__ import annotations

import re
import shutil

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from unlearn.config import ConfigError, validate

# hydra.launcher keys: (smallest allowed value, whether null is allowed)
BOUNDS: dict[str, tuple[int, bool]] = {
    "timeout_min": (1, False), "nodes": (1, False), "tasks_per_node": (1, False),
    "array_parallelism": (1, False), "cpus_per_task": (1, True), "gpus_per_node": (0, True),
    "mem_gb": (1, True), "max_num_timeout": (0, False), "signal_delay_s": (0, False),
}
# sbatch's memory sizes: an integer with an optional unit (--mem-per-gpu=16G)
MEMORY = re.compile(r"\d+[KMGT]?")
# keys whose sweep would give jobs other shapes than the one the launcher asks Slurm for
SHAPE_KEYS = ("trainer", "trainer.devices", "trainer.num_nodes")


def is_slurm(cfg: DictConfig) -> bool:
    """Whether the composed config (with its ``hydra`` node) submits to Slurm."""
    target = OmegaConf.select(cfg, "hydra.launcher._target_", default="") or ""
    return target.endswith(".SlurmLauncher")


def _int_at_least(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_slurm(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` for a Slurm sweep that Slurm or Lightning would refuse."""
    launcher, trainer = cfg.hydra.launcher, cfg.trainer
    devices, accelerator = trainer.devices, trainer.accelerator
    if not _int_at_least(devices, 1):
        raise ConfigError(f"trainer.devices={devices!r} cannot size a Slurm job: set the "
                          "devices per node, e.g. trainer.devices=4 (one Slurm task each)")
    for key, (low, nullable) in BOUNDS.items():
        value = launcher.get(key)
        if not (value is None and nullable) and not _int_at_least(value, low):
            raise ConfigError(f"hydra.launcher.{key}={value!r} must be an integer >= {low}"
                              + (" or null" if nullable else ""))
    for key in ("mem_per_gpu", "mem_per_cpu"):
        value = launcher.get(key)
        if value is not None and not MEMORY.fullmatch(str(value)):
            raise ConfigError(f"hydra.launcher.{key}={value!r} must be a size such as 16G "
                              "(an integer, then K, M, G or T)")
    partition = launcher.get("partition")
    if partition is not None and not re.fullmatch(r"[\w.-]+(,[\w.-]+)*", str(partition)):
        raise ConfigError(f"hydra.launcher.partition={partition!r} must be a partition name "
                          "(or a comma-separated list of names)")
    if launcher.signal_delay_s >= 60 * launcher.timeout_min:
        raise ConfigError(f"hydra.launcher.signal_delay_s={launcher.signal_delay_s} must be "
                          f"shorter than hydra.launcher.timeout_min={launcher.timeout_min} "
                          "minutes")
    gpus = launcher.gpus_per_node or 0
    if accelerator == "cpu" and gpus:
        raise ConfigError(f"trainer.accelerator='cpu' with hydra.launcher.gpus_per_node={gpus}: "
                          "pick a GPU trainer (trainer=gpu|ddp) or set "
                          "hydra.launcher.gpus_per_node=0")
    if accelerator != "cpu" and not gpus:
        raise ConfigError(f"trainer.accelerator={accelerator!r} with "
                          f"hydra.launcher.gpus_per_node={launcher.gpus_per_node!r}: the job "
                          "would have no GPU")
    if launcher.tasks_per_node != devices:
        raise ConfigError(f"hydra.launcher.tasks_per_node={launcher.tasks_per_node} must equal "
                          f"trainer.devices={devices}: Lightning runs one rank per Slurm task")
    num_nodes = trainer.get("num_nodes", 1)
    if launcher.nodes != num_nodes:
        raise ConfigError(f"hydra.launcher.nodes={launcher.nodes} must equal "
                          f"trainer.num_nodes={num_nodes}: set +trainer.num_nodes="
                          f"{launcher.nodes} (Lightning's ranks span every node of the job)")
    overrides = OverridesParser.create().parse_overrides(list(cfg.hydra.overrides.task))
    swept = [o.key_or_group for o in overrides
             if o.is_sweep_override() and o.key_or_group in SHAPE_KEYS]
    if swept:
        raise ConfigError(f"a Slurm sweep cannot vary {swept[0]}: every job of it gets the "
                          "shape of the base config; submit one sweep per trainer shape")
    validate(cfg)  # the run's own values too: a bad one would fail every queued job
    if shutil.which("sbatch") is None:
        raise ConfigError("hydra/launcher=slurm needs Slurm's sbatch, which this machine lacks: "
                          "submit from a Slurm login node, or try the sweep here with "
                          "hydra/launcher=submitit_local")

