"""The Hugging Face hub layout, read and written the same way for every benchmark and twin.

A benchmark is a hub id or a local folder with one sub-folder per config holding parquet
shards and a ``README.md`` whose YAML header declares the configs, so
``datasets.load_dataset(root, config, split="train")`` reads a twin exactly as it reads the hub.
Benchmark modules (:mod:`unlearn.data.mllmu`, ...) parse rows; twins write them with
:func:`write_config` and :func:`build_atomically`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
from datasets.utils import (
    are_progress_bars_disabled,
    disable_progress_bars,
    enable_progress_bars,
)
from PIL import Image

from unlearn.data.images import to_pil
from unlearn.errors import UserError

log = logging.getLogger(__name__)

SHARD = "train-00000-of-00001.parquet"
SPLITS: tuple[str, ...] = ("train", "validation", "test")  # shard name prefixes on the hub
Rows = datasets.Dataset | Iterable[Mapping[str, Any]]


def is_local(source: str) -> bool:
    """Hub ids look like ``owner/name``; anything that exists or is clearly a path is local."""
    return Path(source).expanduser().exists() or source.startswith(("/", ".", "~"))


class MissingConfigError(UserError, ValueError):
    """A local benchmark folder lacks a config the benchmark reads."""


class MissingSplitError(ValueError):
    """A config exists but has no such split (callers may try another one)."""


def load_config(
    source: str,
    config: str,
    *,
    split: str = "train",
    cache_dir: str | None = None,
    revision: str | None = None,
) -> datasets.Dataset:
    """``load_dataset(source, config, split=split)`` with errors that name config and source.

    For a local folder the config's parquet files are also passed as ``data_files``: without
    that, ``datasets`` keys its cache on the folder path and README only, and a folder rebuilt
    in place (e.g. a twin with other arguments) would be served stale from the cache. Files
    named ``{split}-*.parquet`` form the split; a folder whose files name no split (see
    :data:`SPLITS`) holds only ``train``. A split the config lacks raises
    :class:`MissingSplitError`.
    """
    data_files = None
    if is_local(source):
        root = Path(source).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"benchmark source folder {source!r} does not exist")
        folder = root / config
        if not folder.is_dir():
            found = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name[0] != ".")
            raise MissingConfigError(f"config {config!r} not found in {source!r} "
                                     f"(configs there: {found})")
        source = str(root)
        if any(folder.glob(f"{split}-*.parquet")):
            data_files = {split: f"{config}/{split}-*.parquet"}
        elif split == "train" and not any(folder.glob(f"{s}-*.parquet") for s in SPLITS):
            data_files = {split: f"{config}/*.parquet"}
        else:
            shards = sorted(p.name for p in folder.glob("*.parquet"))
            raise MissingSplitError(f"config {config!r} of {source!r} has no split {split!r} "
                                    f"(files: {shards})")
    try:
        return datasets.load_dataset(
            source,
            config,
            split=split,
            data_files=data_files,
            cache_dir=cache_dir,
            revision=revision,
        )
    except Exception as err:
        if isinstance(err, ValueError) and str(err).startswith("Unknown split"):
            raise MissingSplitError(f"config {config!r} of {source!r} has no split {split!r}: "
                                    f"{err}") from err
        raise RuntimeError(f"cannot load config {config!r} from {source!r}: {err}") from err


def iter_rows(ds: Rows, batch_size: int = 64) -> Iterator[Mapping[str, Any]]:
    """Yield rows without decoding images (Arrow storage for a Dataset)."""
    if isinstance(ds, datasets.Dataset):
        arrow = ds.with_format("arrow")
        for start in range(0, len(ds), batch_size):
            yield from arrow[start : start + batch_size].to_pylist()
    else:
        yield from ds


class LazyImage:
    """Decode a row's image at most once, and only if some question needs it."""

    def __init__(self, value: Any, owner: str) -> None:
        self.value, self.owner = value, owner
        self.image: Image.Image | None = None

    def get(self) -> Image.Image:
        """The decoded RGB image (decoded on first use)."""
        if self.image is None:
            if self.value is None:
                raise ValueError(f"{self.owner} has an image question but no image")
            try:
                self.image = to_pil(self.value)
            except (OSError, ValueError, TypeError) as err:
                raise ValueError(f"{self.owner}: the image does not decode ({err})") from None
        return self.image


def source_fingerprint(source: str, configs: Sequence[str], *, revision: str | None,
                       extra: Any, dataset: Callable[[str], datasets.Dataset]) -> str:
    """Stable hash of the data behind ``configs`` of ``source``.

    Local folders hash file contents (identical twins hash alike wherever they live); hub
    sources hash the source id plus each loaded config's ``_fingerprint``. ``extra`` (JSON)
    is whatever else shapes what is read (e.g. a seed that draws image views).
    """
    h = hashlib.sha256()
    h.update(json.dumps([list(configs), extra]).encode())
    local = is_local(source)
    if not local:
        h.update(f"{source}@{revision}".encode())
    for cfg in configs:
        folder = Path(source).expanduser() / cfg
        if local and folder.is_dir():
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                h.update(path.relative_to(folder).as_posix().encode())
                h.update(file_digest(path))
        else:
            h.update(f"{cfg}:{dataset(cfg)._fingerprint}".encode())
    return h.hexdigest()[:16]


def file_digest(path: Path) -> bytes:
    """sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()


# --------------------------------------------------------------------------- writing twins
def write_config(rows: list[dict[str, Any]], features: datasets.Features, folder: Path) -> None:
    """One config -> ``folder/train-00000-of-00001.parquet``."""
    folder.mkdir(parents=True)
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(folder / SHARD))


def readme(configs: Sequence[str], body: str) -> str:
    """Hub-style dataset card; the YAML header is what makes ``load_dataset`` see configs."""
    lines = ["---", "configs:"]
    for cfg in configs:
        lines += [f"- config_name: {cfg}", "  data_files:", "  - split: train",
                  f"    path: {cfg}/train-*"]
    return "\n".join([*lines, "---", "", body])


class Twin:
    """A generated benchmark folder: which configs it holds and the marker that records the
    arguments it was built with (generator version included)."""

    def __init__(self, kind: str, marker: str, configs: Sequence[str]) -> None:
        self.kind, self.marker, self.configs = kind, marker, tuple(configs)

    def recorded(self, root: Path) -> dict[str, Any] | None:
        """The recorded build arguments of an existing twin, or None."""
        marker = root / self.marker
        return json.loads(marker.read_text()) if marker.is_file() else None

    @staticmethod
    def stale(recorded: dict[str, Any], args: dict[str, Any]) -> bool:
        """Same arguments, older generator: a cache the generator may replace."""
        def strip(a: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in a.items() if k != "version"}

        return strip(recorded) == strip(args) and recorded.get("version") != args["version"]

    def exists(self, root: Path, args: dict[str, Any]) -> bool:
        """True if ``root`` already holds this exact build; raise if it holds anything else.

        A build by an older generator version with the same arguments is replaced (it is a
        cache of the generator's own output); any other content is never overwritten.
        """
        if not root.exists():
            return False
        recorded = self.recorded(root)
        if recorded is None:
            if root.is_dir() and not any(root.iterdir()):
                return False
            raise FileExistsError(f"{root} exists and is not a {self.kind} build")
        if self.stale(recorded, args):
            log.warning("replacing %s, built by generator version %s", root,
                        recorded.get("version"))
            return False
        if recorded != args:
            raise FileExistsError(f"{root} holds a {self.kind} built with {recorded}, not "
                                  f"{args}; choose another root or delete it")
        missing = [c for c in self.configs if not (root / c / SHARD).is_file()]
        if missing:
            raise FileExistsError(f"{root} has a build marker but lacks configs {missing}")
        return True

    def build(self, root: Path, args: dict[str, Any], write: Callable[[Path], None]) -> bool:
        """Write the twin under ``root`` atomically: ``write(tmp)`` fills a temporary sibling
        folder, which then replaces ``root``; the marker is written last. Returns False when
        ``root`` already held this build (nothing written)."""
        if self.exists(root, args):
            log.info("%s already built at %s", self.kind, root)
            return False
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; the twin is ordinary shared data
        bars_were_off = are_progress_bars_disabled()
        disable_progress_bars()  # one "Creating parquet" bar per config is noise
        try:
            write(tmp)
            (tmp / self.marker).write_text(json.dumps(args, indent=2, sort_keys=True) + "\n")
            try:
                if root.exists() and self.stale(self.recorded(root) or {}, args):
                    shutil.rmtree(root)
                os.rename(tmp, root)
            except OSError:  # somebody else finished first: fine if it is the same build
                if not self.exists(root, args):
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        finally:
            if not bars_were_off:
                enable_progress_bars()
        return True
