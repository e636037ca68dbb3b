"""``python -m unlearn [overrides]``: compose the Hydra config and run the pipeline."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from unlearn.errors import UserError

CONF = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF, config_name="config")
def main(cfg: DictConfig) -> None:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from unlearn.loggers import route_lightning_logs
    from unlearn.pipeline import run  # heavy imports after Hydra has parsed the overrides
    from unlearn.resume import Interrupted

    route_lightning_logs()
    hydra_cfg = HydraConfig.get()
    try:
        run(cfg, Path(hydra_cfg.runtime.output_dir))
    except UserError as err:
        # a multirun marks the job failed and goes on; a single run says it in one line
        if hydra_cfg.mode == RunMode.MULTIRUN or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except Interrupted as stop:  # the stage saved its state at the end of the step
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise
        print(f"error: stopped by {stop}", file=sys.stderr)
        sys.exit(128 + stop.signum)
    except SIGTERMException:  # Lightning stops training on SIGTERM by raising SystemExit(0)
        print("error: stopped by SIGTERM before the results were written; rerun the same "
              "command to resume (finished stages and caches are reused)", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)


if __name__ == "__main__":
    main()
