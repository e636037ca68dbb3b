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
