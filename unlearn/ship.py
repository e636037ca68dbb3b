"""Rebuild the vanilla model the project ships for a tiny model (``make vanilla``).

    python -m unlearn.ship [hydra overrides]     # default: model=tiny_llava

Runs the project's own vanilla stage for the composed config (reusing the local cache when it
already holds this recipe), evaluates the result on the benchmark's splits, and writes it to
``unlearn/assets/vanilla/<model.name>/``: the safetensors weights, the tokenizer and processor
files, and ``vanilla.json`` with the recipe, its fingerprint, the library versions and the
base-model metrics. ``python -m unlearn`` then loads it whenever the run's fingerprint equals
the recorded one, so the first run skips the stage and every machine starts from the same
weights. ``tests/test_shipped_vanilla.py`` fails when the twin or the recipe changes without
a rebuild.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose, initialize_config_dir

from unlearn.config import validate
from unlearn.pipeline import base_eval, eval_key, eval_splits, load_benchmark
from unlearn.vanilla import RECORD, SHIPPED, vanilla_model

CONF = str(Path(__file__).resolve().parents[1] / "conf")
MAX_BYTES = 12 * 10 ** 6  # what the repository may carry for one shipped model
log = logging.getLogger(__name__)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def finetune_digest(bench: Any) -> str:
    """Hash of what the stage trains on, by content (IDs, items, decoded pixels): unlike the
    files' bytes it is the same on every machine, and it changes when the generator's output
    does, even if nobody bumped its version."""
    h = hashlib.sha256()
    for row in bench.dataset("ft_Data"):
        h.update(str(row["ID"]).encode() + str(row["metadata"]).encode())
        if row.get("image") is not None:
            h.update(np.asarray(row["image"].convert("RGB")).tobytes())
    return h.hexdigest()[:16]


def ship(overrides: list[str], dest_root: Path = SHIPPED) -> Path:
    """Build (or reuse from the cache) the vanilla model of ``overrides`` and ship it."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, "model.vanilla.shipped=false"])
    validate(cfg)
    if cfg.model.source != "tiny":
        raise ValueError(f"model={cfg.model.name!r}: only tiny models are shipped")
    bench = load_benchmark(cfg)
    model, processor, info = vanilla_model(cfg, bench)
    built = Path(info["vanilla"])
    metrics, _, _ = base_eval(cfg, model, processor, eval_splits(cfg, bench),
                              eval_key(cfg, bench, info))
    record = json.loads((built / RECORD).read_text())
    record["finetune_digest"] = finetune_digest(bench)
    record["base_eval"] = {"splits": list(cfg.eval.splits), "forget_ratio": cfg.forget_ratio,
                           "seed": cfg.seed, "metrics": metrics}
    dest = dest_root / cfg.model.name
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(built, tmp)
    for path in tmp.iterdir():
        path.chmod(0o644)  # the cache's private temp files become ordinary package data
    (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    size = folder_bytes(tmp)
    if size > MAX_BYTES:
        shutil.rmtree(tmp)
        raise ValueError(f"{built} holds {size / 1e6:.1f} MB; a shipped model may hold "
                         f"{MAX_BYTES / 1e6:.0f} MB")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    log.info("shipped %s (%.1f MB, fingerprint %s) to %s", built, size / 1e6, record["key"],
             dest)
    return dest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (default model=tiny_llava)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(ship(args.overrides))


if __name__ == "__main__":
    main()
