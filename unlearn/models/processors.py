"""Processors: the tiny models' offline construction, and loading for every checkpoint.

Both tiny and real (hub or local) checkpoints load through :func:`load_processor`, whose
no-video subclasses let Qwen2-VL / Qwen2.5-VL processors load without torchvision; the tiny
builder makes the same processor classes with the hub's chat templates, so tests run the
code path of the real models.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    AutoProcessor,
    LlavaProcessor,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2_5_VLProcessor,
    Qwen2VLProcessor,
)

# The PIL backends behave the same with or without torchvision (the default classes fall back to
# them with a warning when it is missing).
from transformers import CLIPImageProcessorPil as CLIPImageProcessor
from transformers import Qwen2VLImageProcessorPil as Qwen2VLImageProcessor
from transformers.utils import is_torchvision_available

from unlearn.models.families import check_arch

# Verbatim from llava-hf/llava-1.5-7b-hf and Qwen/Qwen2-VL-*-Instruct, so prompts match the hub.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}{# Render all text next #}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def llava_patch(image_size: int) -> int:
    """The LLaVA vision patch of a tiny model: 16, or 14 when 16 does not divide the image."""
    patch = next((p for p in (16, 14) if image_size % p == 0), None)
    if patch is None:
        raise ValueError(f"llava image_size must be a multiple of 16 or 14, got {image_size}")
    return patch


def build_processor(arch: str, image_size: int, tok: PreTrainedTokenizerFast) -> ProcessorMixin:
    """The tiny model's processor around ``tok``, cutting ``image_size`` square images."""
    if arch == "llava":
        return _llava_processor(image_size, tok)
    pixels = image_size * image_size
    improc = Qwen2VLImageProcessor(
        min_pixels=pixels, max_pixels=pixels, patch_size=14, merge_size=2,
        temporal_patch_size=2, image_mean=CLIP_MEAN, image_std=CLIP_STD,
    )
    return _qwen_processor(arch, improc, tok, pixels)


def _llava_processor(image_size: int, tok: PreTrainedTokenizerFast) -> ProcessorMixin:
    patch = llava_patch(image_size)
    improc = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size},
        do_resize=True, do_center_crop=True, do_rescale=True, do_normalize=True,
        do_convert_rgb=True, image_mean=CLIP_MEAN, image_std=CLIP_STD,
    )
    # num_additional_image_tokens=1: CLS is counted then dropped by "default" (G4).
    return LlavaProcessor(
        image_processor=improc, tokenizer=tok, patch_size=patch,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )


class Qwen2VLProcessorNoVideo(Qwen2VLProcessor):
    """Qwen2-VL processor without the video processor, which needs torchvision (G2).

    Module-level so it pickles (ddp_spawn, spawn DataLoader workers).
    """

    @classmethod
    def get_attributes(cls) -> list[str]:
        """Drop ``video_processor``; images and text work unchanged."""
        return ["image_processor", "tokenizer"]


class Qwen2_5_VLProcessorNoVideo(Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor without the video processor, which needs torchvision (G2)."""

    @classmethod
    def get_attributes(cls) -> list[str]:
        """Drop ``video_processor``; images and text work unchanged."""
        return ["image_processor", "tokenizer"]


_NO_VIDEO: dict[str, type[ProcessorMixin]] = {
    "qwen2_vl": Qwen2VLProcessorNoVideo, "qwen2_5_vl": Qwen2_5_VLProcessorNoVideo,
}
_WITH_VIDEO: dict[str, type[ProcessorMixin]] = {
    "qwen2_vl": Qwen2VLProcessor, "qwen2_5_vl": Qwen2_5_VLProcessor,
}


def _qwen_processor(
    arch: str, improc: Qwen2VLImageProcessor, tok: PreTrainedTokenizerFast, pixels: int
) -> ProcessorMixin:
    """Use the real video processor when torchvision exists, else the no-video subclass."""
    if is_torchvision_available():
        from transformers import Qwen2VLVideoProcessor

        video = Qwen2VLVideoProcessor(
            min_pixels=pixels, max_pixels=pixels, patch_size=14, merge_size=2,
            temporal_patch_size=2,
        )
        return _WITH_VIDEO[arch](
            image_processor=improc, tokenizer=tok, video_processor=video,
            chat_template=QWEN2_VL_CHAT_TEMPLATE,
        )
    return _NO_VIDEO[arch](
        image_processor=improc, tokenizer=tok, video_processor=None,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )


def load_processor(path: str | Path, arch: str) -> ProcessorMixin:
    """Load a saved (or hub) processor of ``arch``, offline for local dirs.

    ``AutoProcessor`` needs torchvision for Qwen (video processor), so without it the no-video
    subclass loads the saved tokenizer, image processor and chat template instead.
    """
    check_arch(arch)
    if arch == "llava" or is_torchvision_available():
        return AutoProcessor.from_pretrained(path)
    return _NO_VIDEO[arch].from_pretrained(path)
