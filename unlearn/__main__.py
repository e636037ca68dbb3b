"""``python -m unlearn [overrides]``: compose the Hydra config and run the pipeline."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

CONF = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF, config_name="config")
def main(cfg: DictConfig) -> None:
    from unlearn.loggers import route_lightning_logs
    from unlearn.pipeline import run  # heavy imports after Hydra has parsed the overrides

    route_lightning_logs()
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
