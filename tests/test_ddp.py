"""Two CPU processes (gloo) run a few GA steps and end with identical, updated weights; a
signal to their launcher stops them all."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from unlearn.data.mllmu import MLLMUBench
from unlearn.methods.gradient import GradientAscent
from unlearn.models.loading import load_model_and_processor
from unlearn.models.modules import select_trainable
from unlearn.resume import checkpoint_step
from unlearn.train import fit

from .conftest import CONF


class Checksum(L.Callback):
    """Each rank writes a checksum of its weights after training."""

    def __init__(self, out_dir):
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module):
        total = sum(p.detach().double().sum().item() for p in pl_module.model.parameters())
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(
            json.dumps({"checksum": total, "world": trainer.world_size,
                        "steps": trainer.global_step}))


@pytest.mark.slow
def test_two_process_ddp_ga_steps(tiny_bench_dir, tmp_path):
    bench = MLLMUBench(str(tiny_bench_dir), forget_ratio=10, seed=0)
    model, processor = load_model_and_processor(OmegaConf.create({
        "name": "tiny", "family": "llava", "source": "tiny", "pretrained_id": None,
        "dtype": "float32", "attn_implementation": "sdpa",
        "tiny": {"size": "tiny", "image_size": 64, "seed": 0}}))
    select_trainable(model, "all")
    before = sum(p.detach().double().sum().item() for p in model.parameters())
    stage = OmegaConf.create({"epochs": 1, "batch_size": 2, "loss_scope": "answer",
                              "optim": {"lr": 1e-3, "schedule": "constant"}})
    trainer_cfg = OmegaConf.load(f"{CONF}/trainer/ddp_cpu.yaml")
    trainer_cfg.log_every_n_steps = 1
    forget = bench.forget_train()[:8]
    fit(model, processor, "llava", GradientAscent(), {"forget": forget}, stage, trainer_cfg,
        seed=0, callbacks=[Checksum(tmp_path)])

    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 2  # 8 samples / (2 ranks x batch 2)
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], abs=1e-9)
    assert ranks[0]["checksum"] != pytest.approx(before, abs=1e-6)
    after = sum(p.detach().double().sum().item() for p in model.parameters())
    assert after == pytest.approx(ranks[0]["checksum"], abs=1e-6)  # weights came back


class Trajectory(L.Callback):
    """Each rank writes its loss at every step and its final weights."""

    def __init__(self, out_dir):
        self.out_dir, self.losses = out_dir, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))

    def on_train_end(self, trainer, pl_module):
        torch.save({"losses": self.losses,
                    "weights": [p.detach().clone() for p in pl_module.model.parameters()]},
                   self.out_dir / f"rank{trainer.global_rank}.pt")


def _train(bench, objective, reference, trainer_cfg, batch_size, out_dir):
    import copy

    model, processor = load_model_and_processor(OmegaConf.create({
        "name": "tiny", "family": "llava", "source": "tiny", "pretrained_id": None,
        "dtype": "float32", "attn_implementation": "sdpa",
        "tiny": {"size": "tiny", "image_size": 64, "seed": 0}}))
    select_trainable(model, "all")
    ref = copy.deepcopy(model) if reference else None
    stage = OmegaConf.create({"epochs": 1, "batch_size": batch_size, "loss_scope": "answer",
                              "optim": {"lr": 1e-3, "schedule": "constant"}})
    out_dir.mkdir()
    fit(model, processor, "llava", objective, {"forget": bench.forget_train()[:8],
                                               "retain": bench.retain_train()[:8]},
        stage, trainer_cfg, seed=0, reference=ref, callbacks=[Trajectory(out_dir)])
    return [torch.load(p) for p in sorted(out_dir.glob("rank*.pt"))]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ga_diff", "kl_min"])
def test_two_processes_equal_one_with_the_same_global_batch(tiny_bench_dir, tmp_path, method):
    """2 ranks x batch 2 = 1 process x batch 4: rank r takes every other index of the
    single process's order, so each global batch holds the same items; with per-sequence
    means the averaged gradient is the single process's. Same losses, same weights."""
    from unlearn.methods.gradient import GradientDifference
    from unlearn.methods.kl import KLMinimization

    bench = MLLMUBench(str(tiny_bench_dir), forget_ratio=10, seed=0)
    objective = {"ga_diff": lambda: GradientDifference(reduction="sequence_mean"),
                 "kl_min": lambda: KLMinimization(reduction="sequence_mean",
                                                  kl_reduction="sequence_mean")}[method]
    cpu = OmegaConf.load(f"{CONF}/trainer/cpu.yaml")
    ddp = OmegaConf.load(f"{CONF}/trainer/ddp_cpu.yaml")
    (one,) = _train(bench, objective(), method == "kl_min", cpu, 4, tmp_path / "one")
    ranks = _train(bench, objective(), method == "kl_min", ddp, 2, tmp_path / "two")
    assert len(ranks) == 2 and len(one["losses"]) == len(ranks[0]["losses"]) == 2
    global_losses = [(a + b) / 2 for a, b in zip(ranks[0]["losses"], ranks[1]["losses"],
                                                 strict=True)]
    assert global_losses == pytest.approx(one["losses"], rel=1e-4)
    assert ranks[0]["losses"] != pytest.approx(ranks[1]["losses"])  # the ranks saw other items
    for a, b, c in zip(one["weights"], ranks[0]["weights"], ranks[1]["weights"], strict=True):
        assert torch.equal(b, c)
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    moved = sum(float((a - b).abs().sum()) for a, b in zip(one["weights"], ranks[0]["weights"],
                                                             strict=True))
    assert moved < 1e-2  # (the update itself moves them by far more: see the GA test above)


class SignalRank(L.Callback):
    """Rank ``rank`` sends itself SIGTERM while step ``at`` trains."""

    def __init__(self, rank: int, at: int):
        self.rank, self.at = rank, at

    def on_train_batch_start(self, trainer, *args):
        if trainer.global_rank == self.rank and trainer.global_step == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_both_at_the_same_step(tiny_bench_dir, tmp_path):
    """Rank 1 alone gets SIGTERM in step 3: both ranks agree at its end, the state of step 3
    is saved and both raise Interrupted (alone, rank 1 would stop and rank 0 wait for it in
    the next step's all-reduce forever)."""
    bench = MLLMUBench(str(tiny_bench_dir), forget_ratio=10, seed=0)
    model, processor = load_model_and_processor(OmegaConf.create({
        "family": "llava", "source": "tiny", "tiny": {"size": "tiny", "image_size": 64}}))
    stage = OmegaConf.create({"epochs": 4, "batch_size": 2, "loss_scope": "answer",
                              "optim": {"lr": 1e-3, "schedule": "constant"}})
    select_trainable(model, "all")  # but the vision layers LLaVA does not read (DDP refuses them)
    trainer_cfg = OmegaConf.load(f"{CONF}/trainer/ddp_cpu.yaml")
    forget = bench.forget_train()[:8]
    with pytest.raises(Exception, match=r"(?s)-- Process \d terminated.*Interrupted: SIGTERM "
                                        r"at step 3 of test; its state is saved in"):
        fit(model, processor, "llava", GradientAscent(), {"forget": forget}, stage, trainer_cfg,
            seed=0, label="test", checkpoint=tmp_path / "stage.ckpt",
            callbacks=[SignalRank(rank=1, at=2)])
    assert checkpoint_step(tmp_path / "stage.ckpt") == 3


def _group(pgid: int) -> set[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    alive = set()
    for entry in Path("/proc").iterdir():
        try:
            state, _, group = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(group) == pgid and state != "Z":
            alive.add(int(entry.name))
    return alive


def _children(pid: int) -> set[int]:
    return {int(c) for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()}


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory):
    """One root for the stop tests: the first builds the vanilla model, the others reuse it."""
    return tmp_path_factory.mktemp("stop")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc (Linux)")
@pytest.mark.parametrize(("seed", "signum", "to"), [
    (0, signal.SIGTERM, "launcher"),  # kill PID
    (1, signal.SIGKILL, "launcher"),  # kill -9 PID, the OOM killer
    (2, signal.SIGTERM, "group"),     # timeout(1), Slurm: every process gets it
])
def test_every_rank_stops_when_the_launcher_is_stopped(shared_root, tmp_path, seed, signum, to):
    """``python -m unlearn trainer=ddp_cpu`` in its own process group; once both forked ranks
    train, the signal goes to the launcher (or the group). SIGTERM: the launcher relays it,
    the ranks save the same step and stop, the launcher exits 128+15 with the resume message.
    SIGKILL (no handler runs): the kernel sends the ranks SIGTERM (PR_SET_PDEATHSIG), they save
    and stop. Before, the ranks trained on as orphans, and a SIGTERM sent to them too
    deadlocked them (Lightning's handler runs a collective). ``seed``: a state of its own."""
    run_dir = tmp_path / "run"
    earlier = set(shared_root.glob(".cache/resume/*/unlearn.ckpt"))  # the other cases' states
    job = subprocess.Popen(
        [sys.executable, "-m", "unlearn", "trainer=ddp_cpu", "data.synthetic.num_profiles=4",
         "data.synthetic.num_celebrities=1", "model.tiny.size=tiny", "model.vanilla.shipped=false",
         "model.vanilla.epochs=1", "model.vanilla.mcq_warmup.steps=0", "eval.splits=[forget]",
         "eval.max_new_tokens.generation=4", "method.epochs=1000", "progress.every_s=0",
         "resume.every_n_steps=0", f"seed={seed}",
         # not `all`: a text-only batch on one rank leaves the vision tower without
         # gradients there, and plain DDP then waits for them forever (a defect of its own)
         "trainable_modules=language", f"paths.root={shared_root}",
         f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "stderr").open("w"),
        env={**os.environ, "OMP_NUM_THREADS": "1"}, start_new_session=True)
    log = run_dir / "__main__.log"
    try:
        deadline = time.time() + 600
        while not (log.exists() and "unlearning (ga): step 2/" in log.read_text()):
            assert job.poll() is None and time.time() < deadline, (
                tmp_path / "stderr").read_text()
            time.sleep(0.2)
        ranks = _children(job.pid)
        assert len(ranks) == 2 and ranks < _group(job.pid)
        os.killpg(job.pid, signum) if to == "group" else job.send_signal(signum)
        start, gone = time.time(), {}
        while True:
            alive = _group(job.pid)
            gone |= {pid: round(time.time() - start, 1) for pid in ranks - alive - set(gone)}
            if not alive or time.time() > start + 120:
                break
            time.sleep(0.1)
        print(f"{signal.Signals(signum).name} to the {to}: ranks gone after "
              f"{sorted(gone.values())} s, the whole group after {time.time() - start:.1f} s")
        assert not alive
    finally:
        for pid in _group(job.pid):
            os.kill(pid, signal.SIGKILL)
        job.wait()
    # resume.every_n_steps=0 and 1000 epochs: the signal's save is the run's only one
    (state,) = set(shared_root.glob(".cache/resume/*/unlearn.ckpt")) - earlier
    step = checkpoint_step(state)
    assert step >= 2
    if signum == signal.SIGTERM:
        assert job.returncode == 128 + signal.SIGTERM
        assert (f"error: stopped by SIGTERM at step {step} of unlearning (ga); its state is "
                f"saved in {state}: rerun the same command") in (tmp_path / "stderr").read_text()
    else:
        assert job.returncode == -signal.SIGKILL
