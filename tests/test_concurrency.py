"""Jobs starting together on a cold cache: both finish, the vanilla model is built once; the
cache lock survives a killed holder; the ranks of one job build together."""

import json
import logging
import os
import subprocess
import sys
import threading

import pytest
from omegaconf import OmegaConf

from unlearn import vanilla
from unlearn.utils import build_lock, job_id

from .test_pipeline import TINY


@pytest.mark.slow
def test_two_cold_runs_share_one_vanilla_build(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    jobs = [subprocess.Popen(
        [sys.executable, "-m", "unlearn", *TINY, "method=ga", "method.epochs=1",
         f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/run{i}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        for i in range(2)]
    errors = [job.communicate(timeout=600)[1] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], errors
    manifests = [json.loads((tmp_path / f"run{i}" / "manifest.json").read_text())
                 for i in range(2)]
    assert sorted(m["model"]["cached"] for m in manifests) == [False, True]
    assert sorted(m["base_eval_cached"] for m in manifests) == [False, True]
    built = [p for p in (tmp_path / ".cache" / "vanilla").iterdir() if not p.name.startswith(".")]
    assert len(built) == 1  # (no lock file left: a released lease removes its marker)
    metrics = [json.loads((tmp_path / f"run{i}" / "metrics.json").read_text()) for i in range(2)]
    assert metrics[0] == metrics[1]


def test_a_killed_holder_does_not_block_the_next_build(tmp_path, caplog):
    """A job killed while building (kill -9, a Slurm time limit) leaves its lock file; on the
    same host the next job takes the lock at once (the holder's PID is gone), not after the
    lease (unlearn.utils.LEASE_S, for holders on other hosts)."""
    entry = tmp_path / "vanilla" / "tiny-abc"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from unlearn.utils import build_lock\n"
         f"with build_lock(Path({str(entry)!r})):\n print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"
    assert (entry.parent / ".tiny-abc.lock").is_file()
    holder.kill()
    holder.wait()
    with caplog.at_level(logging.INFO, logger="unlearn.utils"), build_lock(entry):
        pass
    assert "waiting for another process" not in caplog.text
    assert not (entry.parent / ".tiny-abc.lock").exists()  # released: the marker is gone


def test_ranks_above_zero_follow_their_rank_zero(tmp_path, monkeypatch):
    """A rank > 0 of a multi-process job never takes the lock (its rank 0 holds it while the
    stage's trainer waits for every rank): it joins the build that its own job's rank 0
    announced, and otherwise waits for the entry that another job builds, then loads it."""
    entry = tmp_path / "vanilla" / "tiny-abc"
    entry.parent.mkdir()
    monkeypatch.setattr(vanilla, "POLL_S", 0.01)
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    built = []
    monkeypatch.setattr(vanilla, "_build", lambda cfg, bench, path, recipe, part: (
        built.append(path), "trained", None, {"cached": False})[1:])
    monkeypatch.setattr(vanilla, "load_checkpoint", lambda path, family, dtype: ("loaded", None))
    cfg = OmegaConf.create({"model": {"family": "llava", "dtype": "float32"}})

    vanilla._building(entry).write_text("7")  # rank 0 of this job builds: join it
    assert vanilla._follow_rank_zero(cfg, None, entry, {}, "finetune")[0] == "trained"
    assert built == [entry]

    vanilla._building(entry).write_text("8")  # job 8 builds: wait for its entry, load it
    def finish() -> None:
        entry.mkdir()
        (entry / vanilla.RECORD).write_text("{}")
    threading.Timer(0.2, finish).start()
    model, _, info = vanilla._follow_rank_zero(cfg, None, entry, {}, "finetune")
    assert (model, info["cached"], built) == ("loaded", True, [entry])


def test_job_id_is_shared_by_the_ranks_of_one_job(monkeypatch):
    for key in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID", "UNLEARN_JOB_ID"):
        monkeypatch.delenv(key, raising=False)
    made = job_id()  # no launcher id: made here, exported for the ranks Lightning starts
    assert os.environ["UNLEARN_JOB_ID"] == made and job_id() == made
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert job_id() == "4242"


@pytest.mark.slow
def test_two_ddp_ranks_build_the_vanilla_model_together(tmp_path):
    """Lightning's DDP launcher re-runs the command for rank 1, which reaches the vanilla stage
    while rank 0 holds its lock and waits in the process group for rank 1: rank 1 must join
    the build (the marker names its job) instead of waiting for the lock."""
    ddp = ["strategy=ddp", "devices=2"]
    out = subprocess.run(
        [sys.executable, "-m", "unlearn", *TINY, "method=ga", "method.epochs=1",
         "model.vanilla.shipped=false", *[f"trainer.{o}" for o in ddp],
         *[f"model.vanilla.trainer.{o}" for o in ddp],
         f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/run"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=1800)
    assert out.returncode == 0, out.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert (manifest["world_size"], manifest["model"]["cached"]) == (2, False)
    entries = sorted(p.name for p in (tmp_path / ".cache" / "vanilla").iterdir())
    assert entries == [f"tiny_llava-{manifest['model']['fingerprint']}"]  # no marker, no lock
    last = [line for line in (out.stdout + out.stderr).splitlines()
            if "vanilla epochs: step" in line and "(100%)" in line]
    assert len(last) == 2  # one per rank
