"""The model families the framework runs and their transformers classes.

One list shared by the tiny builders, the processors, checkpoint loading and the memory
planner, so a family is added (or a typo refused) in one place.
"""

from __future__ import annotations

from transformers import (
    LlavaForConditionalGeneration,
    PreTrainedModel,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLForConditionalGeneration,
)

ARCHS: tuple[str, ...] = ("llava", "qwen2_vl", "qwen2_5_vl")
MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "llava": LlavaForConditionalGeneration,
    "qwen2_vl": Qwen2VLForConditionalGeneration,
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
}


def check_arch(arch: str) -> None:
    """Fail early with the allowed values instead of deep inside a builder."""
    if arch not in ARCHS:
        raise ValueError(f"unknown model family {arch!r} for the tiny builder; "
                         f"allowed: {list(ARCHS)}")
