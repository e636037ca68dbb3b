"""Loggers: CSV by default; W&B falls back to offline mode when the service is unreachable."""

from lightning.pytorch.loggers import CSVLogger, WandbLogger
from omegaconf import OmegaConf

from unlearn import loggers


def cfg(logger: dict):
    return OmegaConf.create({"logger": logger, "model": {"name": "tiny_llava"},
                             "method": {"name": "ga"}, "forget_ratio": 10,
                             "run_name": "ga_tiny_llava_f10"})


def test_csv_logger_writes_into_the_run_dir(tmp_path):
    logger = loggers.build_logger(cfg({"name": "csv"}), tmp_path)
    assert isinstance(logger, CSVLogger)
    logger.log_metrics({"train/loss": 1.5}, step=0)
    logger.save()
    assert "train/loss" in (tmp_path / "logs" / "metrics.csv").read_text()
    assert loggers.build_logger(cfg({"name": "none"}), tmp_path) is False


def test_wandb_goes_offline_without_network(tmp_path, monkeypatch):
    monkeypatch.setattr(loggers, "wandb_reachable", lambda *a, **k: False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    logger = loggers.build_logger(
        cfg({"name": "wandb", "project": "unlearn-test", "entity": None, "group": "g",
             "mode": "auto"}), tmp_path)
    assert isinstance(logger, WandbLogger)
    logger.log_metrics({"train/loss": 2.0}, step=0)
    run = logger.experiment
    assert run.settings.mode == "offline" or run.offline
    assert set(run.tags) == {"model:tiny_llava", "method:ga", "forget:10"}
    run.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_lightning_lines_reach_the_console_once():
    """Under Hydra (root handlers set) a Lightning message is emitted by exactly one handler."""
    import logging

    from lightning.pytorch.utilities import rank_zero_info

    class Count(logging.Handler):
        def __init__(self):
            super().__init__()
            self.records = []

        def emit(self, record):
            self.records.append(record.getMessage())

    root, lightning = logging.getLogger(), logging.getLogger("lightning")
    counter, saved_root, saved_lightning = Count(), root.handlers[:], lightning.handlers[:]
    lightning_own = Count()
    lightning.handlers[:] = [lightning_own]  # stands in for the package's stream handler
    root.handlers[:] = [counter]
    try:
        loggers.route_lightning_logs()
        rank_zero_info("probe line")
        assert counter.records.count("probe line") == 1
        assert lightning_own.records == []
    finally:
        root.handlers[:], lightning.handlers[:] = saved_root, saved_lightning
