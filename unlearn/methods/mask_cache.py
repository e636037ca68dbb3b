"""Saliency masks on disk: bit-packed, keyed by everything that determines them.

A mask depends on the pre-unlearning model, the data splits, the trainable parameters and
β, ε (plus the batching of the Fisher pass), not on the learning rate or epochs, so every run
of a sweep over those reuses one file. Layout of ``<cache>/masks/<key>/``:

* ``mask.bin``: every mask flattened in name order, concatenated, ``numpy.packbits`` (1 bit
  per element, so a 7B scope takes ~0.9 GB instead of the official ~35 GB);
* ``index.json``: names, shapes, element count and the key's ingredients;
* ``fisher.pt`` (only with ``save_fisher``): the fp32 saliencies S_T and S_P.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from unlearn.utils import atomic_dir, build_lock, fingerprint

log = logging.getLogger(__name__)

MASK_FILE, INDEX_FILE, FISHER_FILE = "mask.bin", "index.json", "fisher.pt"
Saliencies = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]


@dataclass
class CachedMask:
    """Masks plus where they live and whether this call computed them."""

    masks: dict[str, torch.Tensor]
    path: Path
    key: str
    cached: bool

    @property
    def bytes_on_disk(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.name != FISHER_FILE)


def pack(masks: Mapping[str, torch.Tensor]) -> np.ndarray:
    """All masks (name order) as one packed bit array of ceil(n / 8) bytes."""
    flat = [m.detach().cpu().reshape(-1).numpy().astype(np.bool_, copy=False)
            for m in masks.values()]
    return np.packbits(np.concatenate(flat) if flat else np.zeros(0, np.bool_))


def unpack(bits: np.ndarray, shapes: Mapping[str, list[int]]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`pack` given the names and shapes in their original order."""
    sizes = [int(np.prod(s)) for s in shapes.values()]
    flat = torch.from_numpy(np.unpackbits(bits, count=sum(sizes)).view(np.bool_))
    return {name: chunk.reshape(shape) for (name, shape), chunk
            in zip(shapes.items(), torch.split(flat, sizes), strict=True)}


def save(path: Path, masks: Mapping[str, torch.Tensor], meta: Mapping[str, Any],
         saliencies: Saliencies | None = None) -> None:
    """Write a mask directory atomically; a directory another process finished first wins."""
    try:
        with atomic_dir(path) as tmp:
            pack(masks).tofile(tmp / MASK_FILE)
            index = {"shapes": {n: list(m.shape) for n, m in masks.items()},
                     "numel": sum(m.numel() for m in masks.values()), "meta": dict(meta)}
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=1))
            if saliencies is not None:
                torch.save({"target": saliencies[0], "preserve": saliencies[1]},
                           tmp / FISHER_FILE)
    except OSError:
        if not (path / INDEX_FILE).exists():
            raise


def load(path: Path) -> dict[str, torch.Tensor]:
    index = json.loads((path / INDEX_FILE).read_text())
    bits = np.fromfile(path / MASK_FILE, dtype=np.uint8)
    return unpack(bits, index["shapes"])


def load_or_compute(cache_dir: Path, key_parts: Mapping[str, Any],
                    compute: Callable[[], Saliencies], make_mask: Callable[[Saliencies], dict],
                    *, save_fisher: bool = False) -> CachedMask:
    """The mask for ``key_parts`` from the cache, else ``make_mask(compute())`` saved there.

    ``save_fisher`` also stores the saliencies (4 bytes per element each), computing them
    when a cached mask lacks them.
    """
    key = fingerprint(key_parts)
    path = Path(cache_dir) / "masks" / key
    with build_lock(path):  # jobs of a sweep that need one mask compute it once
        wants_fisher = save_fisher and not (path / FISHER_FILE).exists()
        if (path / INDEX_FILE).exists() and not wants_fisher:
            log.info("saliency mask loaded from %s", path)
            return CachedMask(load(path), path, key, cached=True)
        log.info("computing saliency mask %s", key)
        saliencies = compute()
        masks = make_mask(saliencies)
        if (path / INDEX_FILE).exists():  # cached mask, Fisher requested now: add it beside
            tmp = path / f".{FISHER_FILE}.tmp"
            torch.save({"target": saliencies[0], "preserve": saliencies[1]}, tmp)
            tmp.rename(path / FISHER_FILE)
        else:
            save(path, masks, key_parts, saliencies if save_fisher else None)
        return CachedMask(masks, path, key, cached=False)
