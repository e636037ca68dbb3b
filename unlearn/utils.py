"""Small shared helpers: stable fingerprints and library versions for manifests and caches."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
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

    If another process completed ``final`` meanwhile, its copy stays and ours is dropped.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """Hold an inter-process lock while checking for and building the cache entry ``path``:
    jobs that need the same entry at once (a sweep on a cold cache, Slurm array jobs on a
    shared file system) wait for the first to build it, then reuse it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.with_name(f".{path.name}.lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another process to build %s", path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def set_aside(path: Path) -> Path:
    """Move an unreadable cache entry or saved state out of the way (``<name>.corrupt-<time>``)
    so it is rebuilt, and return where it went (kept for inspection)."""
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    path.rename(aside)
    return aside
