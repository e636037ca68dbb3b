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
