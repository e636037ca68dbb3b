"""Shared fixtures: a tiny synthetic benchmark and tiny models, built once per session."""

import os
from pathlib import Path

import pytest
import torch

# two threads, or OMP_NUM_THREADS: on a loaded 2-core machine two spinning OpenMP threads make
# every op of the tiny models tens of times slower
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))

CONF = str(Path(__file__).resolve().parents[1] / "conf")


@pytest.fixture(scope="session")
def tiny_bench_dir(tmp_path_factory) -> Path:
    from unlearn.data.synthetic import build_synthetic_mllmu

    root = tmp_path_factory.mktemp("bench") / "synthetic"
    build_synthetic_mllmu(root, num_profiles=12, num_celebrities=4, seed=0, test_views=2,
                          num_facts=4)
    return root
