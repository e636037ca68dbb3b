"""A stage killed after any step and resumed from its checkpoint ends with the weights of an
uninterrupted run, bit for bit: same batches (loader positions, hint items of the epoch),
same optimizer and schedule state."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from lightning import Callback
from omegaconf import OmegaConf
from torch.utils.data import ConcatDataset

from unlearn.data.hints import FreshHints
from unlearn.data.mllmu import MLLMUBench
from unlearn.data.resumable import OnePassBatchSampler, ResumableSampler
from unlearn.methods.gradient import FineTune, GradientDifference
from unlearn.methods.mmunlearner import MMUnlearner
from unlearn.resume import Interrupted, ResumeCheckpoints, checkpoint_step
from unlearn.train import fit

from .test_divergence import TRAINER, tiny_model


class Kill(Callback):
    """Stands for kill -9 right after step ``at`` trained: nothing of that step is saved."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.at:
            raise RuntimeError("killed")


def stage(epochs: int, batch_size: int) -> OmegaConf:
    return OmegaConf.create({"epochs": epochs, "batch_size": batch_size, "loss_scope": "answer",
                             "optim": {"lr": 3e-3, "schedule": "cosine", "warmup_steps": 2}})


def train(objective, splits, cfg, ckpt=None, every=0, kill=None):
    torch.manual_seed(0)
    model, processor = tiny_model()
    callbacks = [Kill(kill)] if kill else []
    fit(model, processor, "llava", objective, splits(), cfg, TRAINER, seed=3, label="test",
        checkpoint=ckpt, every_n_steps=every, callbacks=callbacks)
    return [p.detach().clone() for p in model.parameters()]


@pytest.fixture(scope="module")
def bench(tiny_bench_dir):
    return MLLMUBench(str(tiny_bench_dir), forget_ratio=10, seed=0)


def hints_epochs(bench):
    """10 items + 3 hint items drawn fresh each epoch; batches of 4: the last one is short."""
    def splits():
        items = bench.finetune()[:10]
        return {"train": ConcatDataset([items, FreshHints(bench.finetune(), 3, seed=1)])}
    return FineTune(), splits, stage(epochs=2, batch_size=4)


def forget_retain(bench):
    """12 forget items in 3 full batches; 7 retain items drawn to 12 each epoch."""
    def splits():
        return {"forget": bench.forget_train()[:12], "retain": bench.retain_train()[:7]}
    return GradientDifference(), splits, stage(epochs=2, batch_size=4)


@pytest.mark.parametrize("case, every, killed", [
    (hints_epochs, 3, 5),    # saved mid-epoch 0, one step lost
    (hints_epochs, 4, 5),    # saved at the short last batch of epoch 0
    (forget_retain, 3, 4),   # saved at the full last batch of epoch 0
    (forget_retain, 4, 6),   # saved inside epoch 1, two steps lost
])
def test_a_killed_stage_resumes_to_the_uninterrupted_weights(bench, tmp_path, case, every,
                                                             killed):
    objective, splits, cfg = case(bench)
    uninterrupted = train(objective, splits, cfg)
    ckpt = tmp_path / "stage.ckpt"
    with pytest.raises(RuntimeError, match="killed"):
        train(objective, splits, cfg, ckpt, every=every, kill=killed)
    assert checkpoint_step(ckpt) == every
    resumed = train(objective, splits, cfg, ckpt, every=every)
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted, resumed, strict=True))
    assert checkpoint_step(ckpt) == 6 if case is forget_retain else 8  # the final save


def test_a_finished_stage_restores_its_weights_without_training(bench, tmp_path):
    class Steps(Callback):
        count = 0

        def on_train_batch_end(self, *args):
            Steps.count += 1

    objective, splits, cfg = forget_retain(bench)
    ckpt = tmp_path / "stage.ckpt"
    trained = train(objective, splits, cfg, ckpt)
    torch.manual_seed(0)
    model, processor = tiny_model()
    fit(model, processor, "llava", objective, splits(), cfg, TRAINER, seed=3, label="test",
        checkpoint=ckpt, callbacks=[Steps()])
    assert Steps.count == 0
    assert all(torch.equal(a, b) for a, b in zip(trained, model.parameters(), strict=True))


class Signal(Callback):
    """Sends ``signum`` to this process while step ``at`` trains."""

    def __init__(self, signum: int, at: int = 2):
        self.signum, self.at = signum, at

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_step == self.at:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("saved", [True, False])
def test_sigterm_saves_the_step_and_stops_with_a_resume_message(bench, tmp_path, saved):
    objective, splits, cfg = forget_retain(bench)
    model, processor = tiny_model()
    ckpt = tmp_path / "stage.ckpt"
    then = (r"its state is saved in .*stage.ckpt: rerun the same command" if saved
            else r"no state is saved \(resume.enabled=false\)$")
    with pytest.raises(Interrupted, match=r"^SIGTERM at step 3 of test; " + then):
        fit(model, processor, "llava", objective, splits(), cfg, TRAINER, seed=3,
            label="test", callbacks=[Signal(signal.SIGTERM)], **(
                {"checkpoint": ckpt} if saved else {}))
    assert checkpoint_step(ckpt) == (3 if saved else None)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after the stage


def test_a_second_ctrl_c_stops_at_once(bench, tmp_path):
    class Twice(Callback):
        def on_train_batch_start(self, trainer, *args):
            if trainer.global_step == 2:
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGINT)

    objective, splits, cfg = forget_retain(bench)
    model, processor = tiny_model()
    with pytest.raises(SystemExit):  # Lightning's answer to KeyboardInterrupt: exit(1)
        fit(model, processor, "llava", objective, splits(), cfg, TRAINER, seed=3,
            label="test", checkpoint=tmp_path / "stage.ckpt", callbacks=[Twice()])
    assert checkpoint_step(tmp_path / "stage.ckpt") is None  # not even the step was saved


def test_an_unreadable_state_is_moved_aside_and_the_stage_starts_over(bench, tmp_path):
    objective, splits, cfg = forget_retain(bench)
    ckpt = tmp_path / "stage.ckpt"
    ckpt.write_bytes(b"truncated")
    fresh = train(objective, splits, cfg, ckpt)
    assert all(torch.equal(a, b) for a, b in zip(fresh, train(objective, splits, cfg),
                                                  strict=True))
    assert len(list(tmp_path.glob("stage.ckpt.corrupt-*"))) == 1
    assert checkpoint_step(ckpt) == 6


def test_the_sampler_draws_random_samplers_stream_and_replays_any_position():
    data = list(range(7))
    gen = torch.Generator().manual_seed(5)
    reference = torch.utils.data.RandomSampler(data, num_samples=10, generator=gen)
    sampler = ResumableSampler(data, num_samples=10, seed=5)
    expected = [list(reference) for _ in range(3)]
    assert [list(sampler) for _ in range(3)] == expected
    for position in (0, 4, 10):
        fresh = ResumableSampler(data, num_samples=10, seed=5)
        it = iter(fresh)
        for _ in range(position):
            next(it)
        state = fresh.state_dict()
        restored = ResumableSampler(data, num_samples=10, seed=5)
        restored.load_state_dict(state)
        restored.set_epoch(0)
        assert list(restored) == expected[0][position:]


def test_the_one_pass_sampler_spreads_one_permutation_and_replays_any_position():
    gen = torch.Generator().manual_seed(5)
    orders = [torch.randperm(7, generator=gen).tolist() for _ in range(2)]
    sampler = OnePassBatchSampler(7, batch_size=3, steps=8, seed=5)  # 3 batches, every 2 steps
    expected = [[o[:3], [], o[3:6], [], o[6:], [], [], []] for o in orders]
    assert [list(sampler) for _ in range(2)] == expected
    for epoch, position in ((0, 0), (0, 3), (0, 8), (1, 5)):
        fresh = OnePassBatchSampler(7, batch_size=3, steps=8, seed=5)
        for _ in range(epoch):
            list(fresh)
        it = iter(fresh)
        for _ in range(position):
            next(it)
        restored = OnePassBatchSampler(7, batch_size=3, steps=8, seed=5)
        restored.load_state_dict(fresh.state_dict())
        restored.set_epoch(epoch)
        assert list(restored) == expected[epoch][position:]


def official_mmunlearner(bench):
    """MMUnlearner's official schedule: 7 retain items in 4 steps of 2, one pass over 4 forget
    items (batches at steps 0 and 2, two optimizer steps each), 2 epochs: global steps
    2 3 5 6 | 8 9 11 12."""
    model, _ = tiny_model()
    objective = MMUnlearner(schedule="official")
    gen = torch.Generator().manual_seed(0)
    objective.masks = {n: torch.rand(p.shape, generator=gen) < 0.5
                       for n, p in model.named_parameters()}

    def splits():
        forget = [s for s in bench.forget_train() if s.modality == "image_text"][:4]
        return {"retain": bench.retain_train()[:7], "forget": forget}
    return objective, splits, stage(epochs=2, batch_size=2)


@pytest.mark.parametrize("killed", [5, 11])  # saved at step 3 (epoch 0), at 9 (epoch 1)
def test_the_official_mmunlearner_schedule_resumes_to_the_uninterrupted_weights(
        bench, tmp_path, killed):
    objective, splits, cfg = official_mmunlearner(bench)
    uninterrupted = train(objective, splits, cfg)
    ckpt = tmp_path / "stage.ckpt"
    with pytest.raises(RuntimeError, match="killed"):
        train(objective, splits, cfg, ckpt, every=3, kill=killed)
    assert checkpoint_step(ckpt) == killed - 2
    resumed = train(objective, splits, cfg, ckpt, every=3)
    assert all(torch.equal(a, b) for a, b in zip(uninterrupted, resumed, strict=True))


def test_checkpoints_every_n_steps_and_at_the_end(bench, tmp_path, monkeypatch):
    saved = []
    monkeypatch.setattr(ResumeCheckpoints, "save",
                        lambda self, trainer: saved.append(trainer.global_step))
    objective, splits, cfg = forget_retain(bench)
    train(objective, splits, cfg, tmp_path / "stage.ckpt", every=2)
    assert saved == [2, 4, 6, 6]


def _start(root, run_dir, *overrides):
    from .test_pipeline import TINY

    return subprocess.Popen(
        [sys.executable, "-m", "unlearn", *TINY, *RESUMABLE, *overrides, f"paths.root={root}",
         f"hydra.run.dir={run_dir}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


# long enough stages that a kill after the first save lands inside them
RESUMABLE = ["model.vanilla.epochs=8", "model.vanilla.mcq_warmup.steps=6", "method.epochs=8",
             "method.optim.lr=1e-3", "resume.every_n_steps=3"]


def _kill_after_first_save(job, states: str, root) -> int:
    """SIGKILL ``job`` once a state matching the glob ``states`` under ``root`` is saved;
    returns the step that state holds."""
    deadline = time.time() + 300
    while not (found := sorted(root.glob(states))):
        assert job.poll() is None and time.time() < deadline, job.stderr.read()
        time.sleep(0.02)
    job.send_signal(signal.SIGKILL)
    job.wait()
    return checkpoint_step(found[0])


@pytest.mark.slow
def test_kill_9_in_each_stage_then_the_same_command_gives_the_uninterrupted_results(tmp_path):
    """kill -9 inside the vanilla stage, rerun, kill -9 inside unlearning, rerun: the
    metrics equal an uninterrupted run's. Each attempt writes a new run directory (as the
    default timestamped one): the saved states are found by the config alone."""
    clean = _start(tmp_path / "clean", tmp_path / "clean" / "run")
    assert clean.wait(timeout=600) == 0, clean.stderr.read()
    root = tmp_path / "killed"
    vanilla = ".cache/vanilla/.*.resume/epochs.ckpt"
    saved = _kill_after_first_save(_start(root, root / "run1"), vanilla, root)
    assert 0 < saved < 32  # inside the 8 epochs of 4 steps
    unlearning = ".cache/resume/*/unlearn.ckpt"
    saved_too = _kill_after_first_save(_start(root, root / "run2"), unlearning, root)
    assert 0 < saved_too < 24  # inside the 8 epochs of 3 steps
    assert not list(root.glob(vanilla))  # the built model is cached: its states are gone
    last = _start(root, root / "run3")
    assert last.wait(timeout=600) == 0, last.stderr.read()
    logs = [(root / f"run{i}/__main__.log").read_text() for i in (2, 3)]
    assert f"vanilla epochs: resuming from step {saved} " in logs[0]
    assert f"unlearning (ga): resuming from step {saved_too} " in logs[1]
    assert not (root / "run1/metrics.json").exists() and not (root / "run2/metrics.json").exists()
    assert (root / "run3/metrics.json").read_text() == (
        tmp_path / "clean/run/metrics.json").read_text()
    assert not list(root.glob(unlearning))  # removed once the results stand


def test_ranks_share_the_single_process_stream_in_blocks():
    """Rank r of w takes the r-th index of each block of w; the short last block is padded
    with the epoch's first indices; a restored rank continues its share."""
    data = list(range(7))
    one = list(ResumableSampler(data, seed=5))

    def shard(rank, state=None):
        sampler = ResumableSampler(data, seed=5)
        sampler.rank, sampler.world = rank, 2
        if state:
            sampler.load_state_dict(state)
        return sampler

    assert [list(shard(r)) for r in (0, 1)] == [one[0::2], one[1::2] + one[:1]]
    assert len(shard(0)) == 4
    first = shard(1)
    it = iter(first)
    taken = [next(it), next(it)]
    state = first.state_dict()
    assert state["position"] == 4  # indices drawn over both ranks
    assert taken + list(shard(1, state)) == one[1::2] + one[:1]
