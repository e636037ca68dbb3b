"""Tiny, randomly initialised LLaVA-1.5 / Qwen2-VL / Qwen2.5-VL built offline: sizes and configs.

They use the real transformers classes and processors around a locally trained byte-level BPE
tokenizer (:mod:`unlearn.models.tokenizer`, :mod:`unlearn.models.processors`), so tests and CPU
experiments run the same code path as the hub checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2VLConfig,
)

from unlearn.models.families import MODEL_CLASSES, check_arch
from unlearn.models.fixups import set_generation_defaults
from unlearn.models.processors import build_processor, llava_patch
from unlearn.models.tokenizer import build_tokenizer


@dataclass(frozen=True)
class TinySize:
    """Widths and depths of one tiny model size (LM and vision tower)."""

    vocab: int
    lm_hidden: int
    lm_layers: int
    lm_heads: int
    lm_kv: int
    lm_inter: int
    v_hidden: int
    v_layers: int
    v_heads: int
    v_inter: int
    tie_embeddings: bool = False


SIZES: dict[str, TinySize] = {
    # unit tests
    "tiny": TinySize(512, 64, 2, 4, 2, 256, 64, 2, 4, 256),
    # memorise -> unlearn integration runs on CPU
    "small": TinySize(2048, 192, 4, 6, 2, 512, 128, 3, 4, 512, tie_embeddings=True),
    "base": TinySize(1024, 256, 6, 8, 4, 768, 192, 4, 6, 768),
    # ~65M parameters: the framework-overhead bench on a model whose steps are compute-bound
    "bench_65m": TinySize(2048, 768, 8, 12, 4, 2048, 384, 6, 6, 1536),
}
DEFAULT_IMAGE_SIZE: dict[str, int] = {"llava": 64, "qwen2_vl": 56, "qwen2_5_vl": 56}
# the real checkpoints' rotary base (LLaMA-2 / Qwen2): the default when a config sets none
DEFAULT_ROPE_THETA: dict[str, float] = {"llava": 1e4, "qwen2_vl": 1e6, "qwen2_5_vl": 1e6}


def build_tiny(
    arch: str,
    size: str = "tiny",
    image_size: int | None = None,
    seed: int = 0,
    extra_corpus: Sequence[str] | None = None,
    init_std: float = 0.02,
    rope_theta: float | None = None,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Build a deterministic (given ``seed``) tiny model and its processor.

    ``init_std`` is the language model's ``initializer_range`` (transformers' 0.02 by default);
    ``rope_theta`` its rotary base (None: the family's own, 1e4 LLaMA, 1e6 Qwen).

    ``image_size`` defaults to 64 for LLaVA (patch 16, or 14 when 16 does not divide it) and 56
    for Qwen (must be a multiple of 28; ``(image_size / 28) ** 2`` image tokens).
    """
    check_arch(arch)
    if size not in SIZES:
        raise ValueError(f"unknown tiny size {size!r}; allowed: {sorted(SIZES)}")
    image_size = image_size or DEFAULT_IMAGE_SIZE[arch]
    tok = build_tokenizer(arch, SIZES[size].vocab, extra_corpus)
    config = tiny_config(arch, size, image_size, init_std, tok, rope_theta)
    torch.manual_seed(seed)
    model = MODEL_CLASSES[arch](config)
    proc = build_processor(arch, image_size, tok)
    set_generation_defaults(model, tok)
    return model, proc


def tiny_config(arch: str, size: str = "tiny", image_size: int | None = None,
                init_std: float = 0.02, tokenizer: PreTrainedTokenizerFast | None = None,
                rope_theta: float | None = None) -> PretrainedConfig:
    """The config :func:`build_tiny` builds its model from.

    Without ``tokenizer`` the vocabulary is the size's (the tokenizer trains to exactly that
    many tokens) and the special-token ids keep their defaults: every shape of the model
    without training a tokenizer, which is what the memory planner (:mod:`unlearn.plan`)
    needs to build it on the meta device.
    """
    check_arch(arch)
    if size not in SIZES:
        raise ValueError(f"unknown tiny size {size!r}; allowed: {sorted(SIZES)}")
    image_size = image_size or DEFAULT_IMAGE_SIZE[arch]
    theta = DEFAULT_ROPE_THETA[arch] if rope_theta is None else rope_theta
    if arch == "llava":
        return _llava_config(SIZES[size], image_size, tokenizer, init_std, theta)
    return _qwen_config(SIZES[size], arch, image_size, tokenizer, init_std, theta)


def _token_ids(tok: PreTrainedTokenizerFast | None, **tokens: str) -> dict[str, int]:
    """Config keys -> ids of the named tokens; none without a tokenizer (defaults stay)."""
    if tok is None:
        return {}
    return {key: tok.convert_tokens_to_ids(token) for key, token in tokens.items()}


def _llava_config(s: TinySize, image_size: int, tok: PreTrainedTokenizerFast | None,
                  init_std: float, rope_theta: float) -> LlavaConfig:
    """LLaVA-1.5 layout: CLIP ViT, penultimate-layer features without CLS, 2-layer MLP projector."""
    patch = llava_patch(image_size)
    specials = {} if tok is None else {
        "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id}
    text_cfg = LlamaConfig(
        vocab_size=s.vocab if tok is None else len(tok), hidden_size=s.lm_hidden,
        intermediate_size=s.lm_inter, num_hidden_layers=s.lm_layers,
        num_attention_heads=s.lm_heads, num_key_value_heads=s.lm_kv,
        max_position_embeddings=1024, tie_word_embeddings=s.tie_embeddings,
        initializer_range=init_std,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta}, **specials,
    )
    vis_cfg = CLIPVisionConfig(
        hidden_size=s.v_hidden, intermediate_size=s.v_inter, num_hidden_layers=s.v_layers,
        num_attention_heads=s.v_heads, image_size=image_size, patch_size=patch,
        projection_dim=s.v_hidden,
    )
    return LlavaConfig(
        vision_config=vis_cfg, text_config=text_cfg,
        image_seq_length=(image_size // patch) ** 2, vision_feature_layer=-2,
        vision_feature_select_strategy="default", projector_hidden_act="gelu",
        **_token_ids(tok, image_token_index="<image>"),
    )


def _qwen_config(s: TinySize, arch: str, image_size: int, tok: PreTrainedTokenizerFast | None,
                 init_std: float, rope_theta: float) -> PretrainedConfig:
    """Qwen2-VL / Qwen2.5-VL layout: patch 14, 2x2 merger (the projector), M-RoPE LM."""
    if image_size % 28:
        raise ValueError(f"qwen image_size must be a multiple of 28, got {image_size}")
    half = s.lm_hidden // s.lm_heads // 2  # M-RoPE sections (t, h, w) must sum to head_dim / 2
    section = [half - 2 * (3 * half // 8), 3 * half // 8, 3 * half // 8]
    text_cfg = dict(
        vocab_size=s.vocab if tok is None else len(tok), hidden_size=s.lm_hidden,
        intermediate_size=s.lm_inter, num_hidden_layers=s.lm_layers,
        num_attention_heads=s.lm_heads, num_key_value_heads=s.lm_kv,
        max_position_embeddings=1024,
        rope_parameters={"rope_type": "default", "mrope_section": section,
                         "rope_theta": rope_theta},
        bos_token_id=None, initializer_range=init_std,
        eos_token_id=None if tok is None else tok.eos_token_id,
        pad_token_id=None if tok is None else tok.pad_token_id,
    )
    token_ids = _token_ids(
        tok, image_token_id="<|image_pad|>", video_token_id="<|video_pad|>",
        vision_start_token_id="<|vision_start|>", vision_end_token_id="<|vision_end|>")
    common = dict(depth=s.v_layers, num_heads=s.v_heads, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2)
    if arch == "qwen2_vl":
        vis_cfg = dict(common, embed_dim=s.v_hidden, hidden_size=s.lm_hidden,
                       mlp_ratio=s.v_inter // s.v_hidden)
        return Qwen2VLConfig(text_config=text_cfg, vision_config=vis_cfg,
                             tie_word_embeddings=s.tie_embeddings, **token_ids)
    vis_cfg = dict(common, hidden_size=s.v_hidden, intermediate_size=s.v_inter,
                   out_hidden_size=s.lm_hidden, window_size=56,
                   fullatt_block_indexes=[s.v_layers - 1])
    return Qwen2_5_VLConfig(text_config=text_cfg, vision_config=vis_cfg,
                            tie_word_embeddings=s.tie_embeddings, **token_ids)
