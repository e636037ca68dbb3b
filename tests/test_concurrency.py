"""Two jobs starting together on a cold cache: both finish, the vanilla model is built once."""

import json
import os
import subprocess
import sys

import pytest

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
    assert len(built) == 1  # (beside it only the lock file)
    metrics = [json.loads((tmp_path / f"run{i}" / "metrics.json").read_text()) for i in range(2)]
    assert metrics[0] == metrics[1]
