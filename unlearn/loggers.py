"""Lightning loggers from the ``logger`` group. W&B falls back to offline without network."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import DictConfig

log = logging.getLogger(__name__)


def route_lightning_logs() -> None:
    """Let Lightning's messages reach the console once, through the root (Hydra's) handlers.

    The ``lightning`` package logger brings its own stream handler and also propagates to
    the root, so under Hydra every Lightning line was printed twice; without it the lines
    keep Hydra's format and also reach the job's log file.
    """
    if logging.getLogger().handlers:
        logging.getLogger("lightning").handlers.clear()


def wandb_reachable(host: str = "api.wandb.ai", timeout: float = 2.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def build_logger(cfg: DictConfig, run_dir: Path) -> Any:
    name = cfg.logger.name
    if name == "none":
        return False
    if name == "csv":
        return CSVLogger(save_dir=str(run_dir), name="logs", version="")
    mode = cfg.logger.get("mode", "auto")
    if mode == "auto":
        mode = "online" if os.environ.get("WANDB_MODE") != "offline" and wandb_reachable() \
            else "offline"
        if mode == "offline":
            log.warning("W&B unreachable: logging offline to %s (sync later with "
                        "`wandb sync`)", run_dir)
    tags = [f"model:{cfg.model.name}", f"method:{cfg.method.name}",
            f"forget:{cfg.forget_ratio}"]
    return WandbLogger(project=cfg.logger.project, entity=cfg.logger.get("entity"),
                       group=cfg.logger.get("group"), name=cfg.run_name, tags=tags,
                       save_dir=str(run_dir), offline=mode == "offline")
