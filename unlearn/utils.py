"""Small shared helpers: stable fingerprints and library versions for manifests and caches."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

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
    """Yield a temporary sibling directory and move it to ``final`` only on success."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
