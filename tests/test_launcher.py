"""Slurm sweeps (``hydra/launcher=slurm``): the checks before submission, the sbatch script the
launcher writes (through a stand-in ``sbatch`` that records it), and a real ``submitit_local``
sweep of two jobs on a cold cache."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from unlearn.callbacks import CheckSlurmSweep
from unlearn.config import ConfigError
from unlearn.launcher import check_slurm

from .conftest import CONF
from .test_pipeline import TINY

ROOT = Path(__file__).resolve().parents[1]
GPUS = ["trainer=gpu", "trainer.devices=4"]

BAD_LAUNCHER: list[tuple[list[str], str]] = [
    (["trainer=ddp"], "trainer.devices=-1 cannot size a Slurm job"),
    ([*GPUS, "hydra.launcher.timeout_min=0"],
     "hydra.launcher.timeout_min=0 must be an integer >= 1"),
    ([*GPUS, "hydra.launcher.nodes=0"], "hydra.launcher.nodes=0 must be an integer >= 1"),
    ([*GPUS, "hydra.launcher.gpus_per_node=-1"],
     "hydra.launcher.gpus_per_node=-1 must be an integer >= 0 or null"),
    ([*GPUS, "hydra.launcher.cpus_per_task=0"],
     "hydra.launcher.cpus_per_task=0 must be an integer >= 1 or null"),
    ([*GPUS, "hydra.launcher.mem_per_gpu=16GB"],
     "hydra.launcher.mem_per_gpu='16GB' must be a size"),
    ([*GPUS, "hydra.launcher.partition='gpu;rm'"],
     "hydra.launcher.partition='gpu;rm' must be a partition name"),
    ([*GPUS, "hydra.launcher.timeout_min=2"],
     "hydra.launcher.signal_delay_s=120 must be shorter than hydra.launcher.timeout_min=2"),
    ([], "trainer.accelerator='cpu' with hydra.launcher.gpus_per_node=1"),
    (["trainer=gpu", "hydra.launcher.gpus_per_node=0"], "the job would have no GPU"),
    ([*GPUS, "hydra.launcher.tasks_per_node=1"],
     "hydra.launcher.tasks_per_node=1 must equal trainer.devices=4"),
    ([*GPUS, "hydra.launcher.nodes=2"],
     "hydra.launcher.nodes=2 must equal trainer.num_nodes=1: set +trainer.num_nodes=2"),
    ([*GPUS, "method.optim.lr=abc"], "method.optim.lr='abc' must be a number > 0"),
]


def slurm_cfg(overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=["hydra/launcher=slurm", *overrides],
                       return_hydra_config=True)


@pytest.mark.parametrize(("overrides", "message"), BAD_LAUNCHER,
                         ids=[" ".join(o) or "defaults" for o, _ in BAD_LAUNCHER])
def test_bad_launcher_options_fail_before_submission(overrides, message):
    with pytest.raises(ConfigError) as err:
        check_slurm(slurm_cfg(overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_launcher_follows_the_trainer(tmp_path, monkeypatch):
    fake_slurm(tmp_path, monkeypatch)
    cfg = slurm_cfg([*GPUS, "+trainer.num_nodes=2", "hydra.launcher.cpus_per_task=6"])
    check_slurm(cfg)  # passes
    launcher = cfg.hydra.launcher
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 4, 2)
    assert list(launcher.setup) == ["export OMP_NUM_THREADS=6"]
    cpu = slurm_cfg(["hydra.launcher.gpus_per_node=0"])
    check_slurm(cpu)
    assert (cpu.hydra.launcher.tasks_per_node, cpu.hydra.launcher.nodes) == (1, 1)


def test_slurm_without_multirun_is_refused():
    with pytest.raises(SystemExit, match="hydra/launcher=slurm submits a sweep: add --multirun"):
        CheckSlurmSweep().on_run_start(slurm_cfg(GPUS))


def test_a_sweep_over_the_job_shape_is_refused(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "unlearn", "-m", "hydra/launcher=slurm", "trainer=gpu",
         "trainer.devices=1,2", f"paths.root={tmp_path}"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT,
        timeout=300)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        "error: a Slurm sweep cannot vary trainer.devices: every job of it gets the shape of "
        "the base config; submit one sweep per trainer shape")


def test_no_sbatch_is_one_line(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(ConfigError, match="needs Slurm's sbatch, which this machine lacks"):
        check_slurm(slurm_cfg(GPUS))


def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch | None = None) -> dict:
    """A bin folder with ``srun`` and an ``sbatch`` that keeps the script it is given and
    refuses it as Slurm does for an unknown partition; returns the environment to use."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\nfor last; do :; done\n"
        f'cp "$last" {tmp_path}/submitted.sh\n'
        'echo "sbatch: error: invalid partition specified: a100" >&2\nexit 1\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    path = f"{bin_dir}:{os.environ['PATH']}"
    if monkeypatch is not None:
        monkeypatch.setenv("PATH", path)
    return {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1"}


def test_sbatch_script_of_a_two_job_sweep(tmp_path):
    """What Slurm receives for `-m hydra/launcher=slurm trainer=gpu trainer.devices=4
    +trainer.num_nodes=2 method=ga,npo`: one array of 2 jobs, 2 nodes x 4 tasks x 4 GPUs."""
    env = fake_slurm(tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "unlearn", "-m", "hydra/launcher=slurm", *GPUS,
         "+trainer.num_nodes=2", "hydra.launcher.partition=a100", "hydra.launcher.mem_gb=64",
         "method=ga,npo", f"paths.root={tmp_path}", f"hydra.sweep.dir={tmp_path}/sweep"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 1
    assert "sbatch: error: invalid partition specified: a100" in out.stderr  # Slurm's words
    flags = [line for line in (tmp_path / "submitted.sh").read_text().splitlines()
             if line.startswith("#SBATCH")]
    assert flags == [
        "#SBATCH --array=0-1%2", "#SBATCH --cpus-per-task=8", "#SBATCH --gpus-per-node=4",
        "#SBATCH --job-name=unlearn", "#SBATCH --mem=64GB", "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4", "#SBATCH --open-mode=append",
        f"#SBATCH --output={tmp_path}/sweep/.submitit/%A_%a/%A_%a_0_log.out",
        "#SBATCH --partition=a100", "#SBATCH --signal=TERM@120", "#SBATCH --time=1440",
        "#SBATCH --wckey=submitit"]
    assert "export OMP_NUM_THREADS=8" in (tmp_path / "submitted.sh").read_text()


@pytest.mark.slow
def test_submitit_local_sweep_of_two_jobs_builds_vanilla_once(tmp_path):
    """Two jobs of one sweep start together on an empty cache (submitit's local executor runs
    them as parallel processes): both write their results, one builds the vanilla model and
    the base evaluation, the other waits for them and reuses them."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sweep = tmp_path / "sweep"
    out = subprocess.run(
        [sys.executable, "-m", "unlearn", "-m", "hydra/launcher=submitit_local",
         "method=ga,ga_diff", *TINY, "model.vanilla.shipped=false",
         "method.epochs=1", f"paths.root={tmp_path}", f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)  # a loaded 2-core CI
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted(p.name for p in sweep.iterdir() if (p / "metrics.json").is_file())
    assert runs == ["0_ga_tiny_llava_f10", "1_ga_diff_tiny_llava_f10"]
    manifests = [json.loads((sweep / r / "manifest.json").read_text()) for r in runs]
    assert sorted(m["model"]["cached"] for m in manifests) == [False, True]
    assert sorted(m["base_eval_cached"] for m in manifests) == [False, True]
    assert manifests[0]["model"]["fingerprint"] == manifests[1]["model"]["fingerprint"]
    entries = [p.name for p in (tmp_path / ".cache" / "vanilla").iterdir()]
    assert entries == [f"tiny_llava-{manifests[0]['model']['fingerprint']}"]  # no lock left
    logs = "".join((sweep / r / "__main__.log").read_text() for r in runs)
    assert logs.count("vanilla fine-tune on") == 1
    assert logs.count("waiting for another process to build") >= 1
    metrics = [json.loads((sweep / r / "metrics.json").read_text()) for r in runs]
    assert metrics[0]["base"] == metrics[1]["base"]
    assert metrics[0]["unlearned"] != metrics[1]["unlearned"]  # GA and GA+retain differ
