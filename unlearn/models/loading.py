"""Load a model + processor from a ``model`` config: tiny (built offline) or pretrained.

Pretrained ids, local checkpoint dirs and cached fine-tuned models all go through the same
family-specific ``from_pretrained``, so the path that serves ``llava-hf/llava-1.5-7b-hf`` is the one
the tiny tests exercise after :func:`save_checkpoint`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, ProcessorMixin

from unlearn.errors import UserError
from unlearn.models.families import ARCHS, MODEL_CLASSES
from unlearn.models.fixups import set_generation_defaults
from unlearn.models.processors import load_processor
from unlearn.models.tiny import build_tiny

FAMILIES: tuple[str, ...] = ARCHS
SOURCES: tuple[str, ...] = ("tiny", "pretrained")
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
}
# What a local model folder in the hub layout holds: each entry is satisfied by any one of its
# files (hub repos keep the image processor in preprocessor_config.json, transformers 5's
# save_pretrained in processor_config.json; weights are one file or shards with an index).
HUB_LAYOUT: tuple[tuple[str, ...], ...] = (
    ("config.json",),
    ("model.safetensors", "model.safetensors.index.json"),
    ("tokenizer.json", "tokenizer_config.json"),
    ("preprocessor_config.json", "processor_config.json"),
)


def _looks_local(source: str) -> bool:
    """A path rather than a hub id ('owner/name'): absolute, relative or home-based."""
    return source.startswith(("/", "./", "../", "~")) or Path(source).exists()


def _choice(value: str, allowed: tuple[str, ...] | dict, what: str) -> str:
    """Reject config typos with the allowed values in the message."""
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; allowed: {list(allowed)}")
    return value


def load_model_and_processor(
    cfg: Mapping[str, Any], extra_corpus: Sequence[str] | None = None
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Model (in eval mode, like ``from_pretrained`` returns it) and processor for a config.

    ``source=tiny`` builds a fresh model deterministically from ``tiny.seed`` (``tiny.size``,
    ``tiny.image_size``), its tokenizer also trained on ``extra_corpus`` (the benchmark's texts,
    so its names cost few tokens); ``source=pretrained`` loads ``pretrained_id`` (hub id or local
    dir) and ignores ``extra_corpus``.
    """
    family = _choice(cfg["family"], FAMILIES, "model family")
    source = _choice(cfg.get("source", "pretrained"), SOURCES, "model source")
    dtype = DTYPES[_choice(cfg.get("dtype", "float32"), DTYPES, "dtype")]
    attn = cfg.get("attn_implementation")
    if source == "pretrained":
        return _from_pretrained(cfg["pretrained_id"], family, dtype, attn)
    tiny = cfg.get("tiny") or {}
    model, processor = build_tiny(
        family, size=tiny.get("size", "tiny"), image_size=tiny.get("image_size"),
        seed=tiny.get("seed", 0), extra_corpus=extra_corpus,
        init_std=tiny.get("init_std", 0.02), rope_theta=tiny.get("rope_theta"),
    )
    if attn:
        model.set_attn_implementation(attn)
    return model.to(dtype).eval(), processor


def save_checkpoint(model: PreTrainedModel, processor: ProcessorMixin, path: str | Path) -> Path:
    """Write model + processor to ``path`` so :func:`load_checkpoint` reloads them offline.

    A peft model must be merged first (``merge_and_unload``): its ``save_pretrained`` would
    write the adapter only.
    """
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"expected a transformers model, got {type(model).__name__}; "
                        "merge adapters first")
    path = Path(path)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def load_checkpoint(
    path: str | Path, family: str, dtype: str = "float32", attn_implementation: str | None = None
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Reload a :func:`save_checkpoint` directory through the pretrained path."""
    family = _choice(family, FAMILIES, "model family")
    torch_dtype = DTYPES[_choice(dtype, DTYPES, "dtype")]
    return _from_pretrained(str(path), family, torch_dtype, attn_implementation)


def check_hub_folder(path: Path, family: str) -> None:
    """Refuse, in one line, a local folder that ``from_pretrained`` would fail on deep inside
    transformers: files of :data:`HUB_LAYOUT` missing, or a checkpoint of another family."""
    missing = [" or ".join(names) for names in HUB_LAYOUT
               if not any((path / name).is_file() for name in names)]
    if missing:
        pickled = any(path.glob("pytorch_model*.bin"))
        raise UserError(
            f"model folder {str(path)!r} is not in the hub layout: missing {'; '.join(missing)}"
            + (" (pytorch_model*.bin is never read: weights load from safetensors only)"
               if pickled else "")
            + " (save_pretrained of the model and its processor writes them)")
    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"model folder {str(path)!r}: config.json is not JSON ({err})") from None
    if model_type != family:
        raise UserError(f"model folder {str(path)!r} holds a {model_type!r} model, but "
                        f"model.family is {family!r}: pick the model config of that family")


def _from_pretrained(
    source: str, family: str, dtype: torch.dtype, attn: str | None
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load with the family's class, so ``family`` (not the checkpoint's guess) picks the model."""
    if _looks_local(source):
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise UserError(f"model.pretrained_id={source!r}: no such folder (a local "
                            "checkpoint is a folder in the hub layout; a hub id is 'owner/name')")
        check_hub_folder(folder, family)
    # weights only from safetensors (no pickle), never the checkpoint's own code
    kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True,
                              "trust_remote_code": False}
    if attn:
        kwargs["attn_implementation"] = attn
    model = MODEL_CLASSES[family].from_pretrained(source, **kwargs)
    processor = load_processor(source, family)
    set_generation_defaults(model, processor.tokenizer)
    return model, processor
