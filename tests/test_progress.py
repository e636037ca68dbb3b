"""Plain progress lines where the output is not a terminal."""

import logging
import re
from types import SimpleNamespace

import torch

from unlearn import progress
from unlearn.progress import PlainProgress


def test_a_line_every_interval_and_at_the_last_step(caplog):
    now = [0.0]
    bar = PlainProgress("vanilla epochs", every_s=30, clock=lambda: now[0])
    trainer = SimpleNamespace(global_step=0, estimated_stepping_batches=10,
                              callback_metrics={"train/loss": torch.tensor(1.23456)})
    batch = {"train": {"input_ids": torch.zeros(4, 3)}}
    bar.on_train_start(trainer, None)
    with caplog.at_level(logging.INFO, logger="unlearn.progress"):
        for step in range(1, 11):
            now[0] += 10.0
            trainer.global_step = step
            bar.on_train_batch_end(trainer, None, None, batch, step - 1)
    lines = [r.getMessage() for r in caplog.records]
    # at 30 s (step 3), 60 s (step 6), 90 s (step 9) and the last step (10)
    assert lines == [
        "vanilla epochs: step 3/10 (30%), loss 1.2346, 0.4 seq/s, ETA 1m10s",
        "vanilla epochs: step 6/10 (60%), loss 1.2346, 0.4 seq/s, ETA 40s",
        "vanilla epochs: step 9/10 (90%), loss 1.2346, 0.4 seq/s, ETA 10s",
        "vanilla epochs: step 10/10 (100%), loss 1.2346, 0.4 seq/s, ETA 0s",
    ]


def test_a_resumed_stage_estimates_from_the_steps_it_ran(caplog):
    now = [0.0]
    bar = PlainProgress("warm-up", every_s=30, clock=lambda: now[0])
    trainer = SimpleNamespace(global_step=60, estimated_stepping_batches=100, callback_metrics={})
    batch = {"train": {"input_ids": torch.zeros(2, 3)}}
    bar.on_train_start(trainer, None)  # restored at step 60
    with caplog.at_level(logging.INFO, logger="unlearn.progress"):
        for step in range(61, 64):
            now[0] += 10.0
            trainer.global_step = step
            bar.on_train_batch_end(trainer, None, None, batch, step - 1)
    # 3 steps in 30 s: 37 left take 6m10s (from step 63 alone it would say 17 s)
    assert [r.getMessage() for r in caplog.records] == [
        "warm-up: step 63/100 (63%), loss -, 0.2 seq/s, ETA 6m10s"]


def test_a_real_fit_off_a_terminal_prints_a_line_at_every_step(tiny_bench_dir, caplog,
                                                              monkeypatch):
    """Under pytest the output is captured, as in a Slurm log: no live bar, plain lines. With
    ``progress.every_s=0`` one per step: 12 items in batches of 4, 2 epochs = steps 1..6."""
    from omegaconf import OmegaConf

    from unlearn.data.mllmu import MLLMUBench
    from unlearn.methods.gradient import FineTune
    from unlearn.train import fit

    from .test_divergence import TRAINER, tiny_model

    monkeypatch.setattr(progress, "_every_s", 30.0)
    progress.configure(0)
    model, processor = tiny_model()
    items = MLLMUBench(str(tiny_bench_dir), forget_ratio=10, seed=0).finetune()[:12]
    stage = OmegaConf.create({"epochs": 2, "batch_size": 4, "loss_scope": "answer",
                              "optim": {"lr": 1e-3, "schedule": "constant"}})
    with caplog.at_level(logging.INFO, logger="unlearn.progress"):
        trainer = fit(model, processor, "llava", FineTune(), {"train": items}, stage, TRAINER,
                      seed=0, label="vanilla epochs")
    assert not trainer.progress_bar_callback  # the live bar is off
    lines = [r.getMessage() for r in caplog.records if r.name == "unlearn.progress"]
    parsed = [re.fullmatch(r"vanilla epochs: step (\d+)/6 \((\d+)%\), loss (\d+\.\d{4}), "
                           r"(\d+\.\d) seq/s, ETA (\d+m)?\d+s", line) for line in lines]
    assert all(parsed), lines
    assert [int(m[1]) for m in parsed] == [1, 2, 3, 4, 5, 6]
    assert [int(m[2]) for m in parsed] == [16, 33, 50, 66, 83, 100]
    assert lines[-1].endswith("ETA 0s")
    assert all(float(m[4]) > 0 for m in parsed)
