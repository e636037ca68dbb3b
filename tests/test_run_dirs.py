"""A directory holding results is refused before Hydra writes anything into it."""

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
