"""Small shared helpers: stable fingerprints and library versions for manifests and caches."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from filelock import SoftFileLease, Timeout
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf

log = logging.getLogger(__name__)

LIBRARIES = ("torch", "transformers", "tokenizers", "datasets", "pyarrow", "pillow", "numpy",
             "lightning", "peft", "hydra-core", "omegaconf")


def plain(obj: Any) -> Any:
    """OmegaConf nodes to resolved plain containers (anything else unchanged)."""
    if isinstance(obj, DictConfig | ListConfig):
        return OmegaConf.to_container(obj, resolve=True)
    return obj


def fingerprint(obj: Any, length: int = 16) -> str:
    """Stable short hash of a JSON-serialisable object (keys sorted)."""
    text = json.dumps(plain(obj), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling directory and move it to ``final`` only on success.

    The temporary name is unique across machines (PIDs are not), and the rename is atomic on
    a shared file system too, so readers never see a half-written entry. If another process
    completed ``final`` meanwhile, its copy stays and ours is dropped.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; cache entries are shared
    try:
        yield tmp
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# A cache build's lock is a lease (filelock's SoftFileLease): a marker file created with
# O_EXCL and refreshed by a heartbeat thread every LEASE_S / 3 seconds. Unlike flock (filelock's
# FileLock), it works on every shared file system (NFS, Lustre without -o flock, GPFS), and a
# holder that died is replaced: at once on its own host (its PID is gone), after LEASE_S
# without a refresh from another host (a node lost with a Slurm job). LEASE_S exceeds NFS's
# attribute caching (acregmax, 60 s by default) so that a live holder is never taken over.
LEASE_S = 300.0
POLL_S = 1.0  # how often a waiting job looks at the lock (one stat per second on NFS)


@contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """Hold an inter-process, inter-machine lock while checking for and building the cache
    entry ``path``: jobs that need the same entry at once (a sweep on a cold cache, Slurm
    array jobs on a shared file system) wait for the first to build it, then reuse it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = SoftFileLease(str(path.with_name(f".{path.name}.lock")), lease_duration=LEASE_S)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process to build %s", path)
        lock.acquire(poll_interval=POLL_S)
    try:
        yield
    finally:
        lock.release()


def job_rank() -> int:
    """This process's rank in its job as the launcher's environment gives it (``RANK``,
    ``LOCAL_RANK``, ``SLURM_PROCID``, read by Lightning; ``NODE_RANK`` for nodes started by
    hand): 0 only for the job's first process, and in a single-process run."""
    return int(getattr(rank_zero_only, "rank", 0) or 0) or int(os.environ.get("NODE_RANK", 0))


def job_id() -> str:
    """What every process of one multi-process job shares and no other job has: Slurm's job
    id, torchrun's run id, ``UNLEARN_JOB_ID`` (set it when starting nodes by hand), else an id
    this process makes and passes on through the environment to the ranks that Lightning
    starts from it (they copy ``os.environ``)."""
    for key in ("SLURM_JOB_ID", "TORCHELASTIC_RUN_ID", "UNLEARN_JOB_ID"):
        if os.environ.get(key):
            return os.environ[key]
    os.environ["UNLEARN_JOB_ID"] = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
    return os.environ["UNLEARN_JOB_ID"]


def set_aside(path: Path) -> Path:
    """Move an unreadable cache entry or saved state out of the way (``<name>.corrupt-<time>``)
    so it is rebuilt, and return where it went (kept for inspection)."""
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    path.rename(aside)
    return aside
