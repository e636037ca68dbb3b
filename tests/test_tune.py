"""The tiny-world value selection rule (unlearn/tune.py) and the ${scaled:…} resolver."""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from unlearn.resolvers import scaled_values
from unlearn.tune import choose, main, read_job

from .conftest import CONF

SPLITS = ("forget", "retain")


def _metrics(forget: tuple[float, float], retain: tuple[float, float]) -> dict:
    """Base 1.0 everywhere; unlearned: forget image+text (class, cloze) and retain (class,
    cloze) on both modalities."""
    def split(class_acc: float, cloze_acc: float) -> dict:
        cell = {"class_acc": class_acc, "cloze_acc": cloze_acc}
        return {"image_text": dict(cell), "text_only": dict(cell)}

    base = {s: split(1.0, 1.0) for s in SPLITS}
    return {"base": base, "unlearned": {"forget": split(*forget), "retain": split(*retain)}}


def _job(root: Path, name: str, method: str, lr: float, epochs: int, metrics: dict | None
         ) -> Path:
    path = root / name
    path.mkdir(parents=True)
    cfg = {"method": {"name": method, "epochs": epochs, "optim": {"lr": lr}}}
    OmegaConf.save(OmegaConf.create(cfg), path / "config.yaml")
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps(metrics))
    return path


def test_rule_takes_the_strongest_forget_drop_within_the_retain_bound(tmp_path, capsys):
    sweep = tmp_path / "multirun"
    # forget drops 0.3 / 0.7 / 0.9; retain drops 0.05 / 0.10 / 0.40
    _job(sweep, "0_a", "ga", 1e-4, 1, _metrics((0.8, 0.6), (0.95, 0.95)))
    _job(sweep, "1_b", "ga", 3e-4, 1, _metrics((0.4, 0.2), (0.9, 0.9)))
    _job(sweep, "2_c", "ga", 1e-3, 1, _metrics((0.1, 0.1), (0.6, 0.6)))
    _job(sweep, "3_d", "ga", 1e-3, 3, None)  # failed: no metrics.json
    _job(sweep, "4_e", "npo", 1e-4, 1, _metrics((0.5, 0.5), (0.5, 0.5)))
    jobs = [read_job(p) for p in sorted(sweep.iterdir())]
    assert [round(j.forget_drop, 6) if j.forget_drop is not None else None for j in jobs] == [
        0.3, 0.7, 0.9, None, 0.5]
    assert [round(j.retain_drop, 6) if j.retain_drop is not None else None for j in jobs] == [
        0.05, 0.1, 0.4, None, 0.5]
    chosen = choose(jobs, bound=0.10)
    assert chosen["ga"].path.name == "1_b"  # 0.7 within the bound (0.10 inclusive)
    assert chosen["npo"] is None             # its only job drops retain by 0.5
    assert choose(jobs, bound=0.05)["ga"].path.name == "0_a"
    main([str(sweep)])
    out = capsys.readouterr().out
    assert "| ga | 0.001 | 3 | failed | failed | |" in out
    assert "| ga | 0.0003 | 1 | +0.700 | +0.100 | **yes** |" in out
    assert "ga: lr 0.0003, epochs 1" in out
    assert "npo: no job within a retain drop of 0.1" in out


def test_ties_go_to_the_smaller_lr_then_fewer_epochs(tmp_path):
    sweep = tmp_path / "m"
    same = _metrics((0.5, 0.5), (1.0, 1.0))
    _job(sweep, "0", "rmu", 1e-3, 1, same)
    _job(sweep, "1", "rmu", 1e-4, 3, same)
    _job(sweep, "2", "rmu", 1e-4, 1, same)
    jobs = [read_job(p) for p in sorted(sweep.iterdir())]
    assert choose(jobs, bound=0.1)["rmu"].path.name == "2"


@pytest.mark.parametrize(("model", "scale"), [("tiny_llava", "tiny"), ("llava7b", "paper")])
def test_scaled_values_follow_the_model_and_yield_to_the_command_line(model, scale):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=[f"model={model}", "method=npo"])
        pinned = compose("config", overrides=[f"model={model}", "method=npo",
                                              "method.optim.lr=0.5"])
    values = scaled_values(cfg)
    assert values, "npo has per-scale values"
    for key, v in values.items():
        assert v["ran"] == v[scale] == OmegaConf.select(cfg, key)
    assert pinned.method.optim.lr == 0.5
    assert "method.optim.lr" not in scaled_values(pinned)
