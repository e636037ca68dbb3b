"""Plain progress lines where the output is not a terminal."""

import logging
from types import SimpleNamespace

import torch

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
