"""The command line: errors a user can fix are one line and exit 1; a directory holding
results is refused before Hydra writes anything into it."""

import subprocess
import sys

import pytest


def run_unlearn(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unlearn", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("multirun", [False, True])
def test_a_finished_run_or_sweep_dir_is_left_untouched(tmp_path, multirun):
    done = tmp_path / ("0_ga" if multirun else "run")
    done.mkdir(parents=True)
    (done / "metrics.json").write_text("{}")
    args = (["-m", "method=ga,npo", f"hydra.sweep.dir={tmp_path}"] if multirun
            else [f"hydra.run.dir={done}"])
    out = run_unlearn(*args, f"paths.root={tmp_path}")
    assert out.returncode == 1
    refused = tmp_path if multirun else done
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: {refused} already holds")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        done.name, f"{done.name}/metrics.json"]


@pytest.mark.parametrize(("overrides", "message"), [
    (["method.batch_size=0"], "error: method.batch_size=0 must be an integer >= 1"),
    (["method.optim.lr=abc"], "error: method.optim.lr='abc' must be a number > 0"),
    (["method=icu_t", "prompt_style=none"],
     "error: method='icu_t': the teacher view equals the student's input"),
    (["model=llava7b", "model.pretrained_id=/nonexistent", "method=none",
      "data.synthetic.num_profiles=4", "data.synthetic.num_celebrities=1"],
     "error: model.pretrained_id='/nonexistent': no such folder"),
])
def test_user_errors_are_one_line_without_traceback(tmp_path, overrides, message):
    out = run_unlearn(*overrides, f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/run")
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_model_folder_not_in_the_hub_layout_is_one_line(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    out = run_unlearn("model=qwen25vl3b", f"model.pretrained_id={folder}", "method=none",
                      "data.synthetic.num_profiles=4", "data.synthetic.num_celebrities=1",
                      f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/run")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: model folder '{folder}' is not in the hub layout: missing config.json; "
        "model.safetensors or model.safetensors.index.json; tokenizer.json or "
        "tokenizer_config.json; preprocessor_config.json or processor_config.json "
        "(save_pretrained of the model and its processor writes them)")


@pytest.mark.slow
def test_sigterm_in_training_exits_non_zero_with_a_message_and_no_results(tmp_path):
    """Slurm preemption sends SIGTERM; Lightning alone would exit 0 without results."""
    import os
    import signal
    import time

    from .test_pipeline import TINY

    run_dir = tmp_path / "run"
    job = subprocess.Popen(
        [sys.executable, "-m", "unlearn", *TINY, "model.vanilla.epochs=200",
         f"paths.root={tmp_path}", f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    log = run_dir / "__main__.log"
    deadline = time.time() + 240
    while not (log.exists() and "vanilla fine-tune on" in log.read_text()):
        assert time.time() < deadline and job.poll() is None, "the vanilla stage never started"
        time.sleep(0.5)
    time.sleep(3)  # inside the epochs
    job.send_signal(signal.SIGTERM)
    stderr = job.communicate(timeout=120)[1]
    assert job.returncode == 128 + signal.SIGTERM
    assert stderr.strip().splitlines()[-1].startswith("error: stopped by SIGTERM")
    assert not (run_dir / "metrics.json").exists()


def _broken_clear(tmp_path, break_it) -> str:
    """A small CLEAR twin copy with one defect (the real loader reads it)."""
    from unlearn.data.clear_twin import ClearTwin

    root = tmp_path / "clear"
    ClearTwin(num_persons=10, portraits=1, qa_per_person=1, num_real_faces=4,
              num_real_world=2).build(root)
    break_it(root)
    return str(root)


@pytest.mark.parametrize(("defect", "message"), [
    (lambda root: __import__("shutil").rmtree(root / "real_faces"),
     "error: config 'real_faces' not found in '{root}' (configs there: ['forget01'"),
    (lambda root: __import__("shutil").copytree(root / "forget10", root / "retain90",
                                                 dirs_exist_ok=True),
     "error: forget10 and retain90 of"),
])
def test_a_broken_clear_folder_is_one_line_and_nothing_trains(tmp_path, defect, message):
    source = _broken_clear(tmp_path, defect)
    out = run_unlearn("data=clear", f"data.source={source}", "method=none",
                      f"paths.root={tmp_path}", f"hydra.run.dir={tmp_path}/run")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(message.format(root=source))
    assert not (tmp_path / ".cache" / "vanilla").exists()  # nothing trained
