"""Tiny, randomly initialised LLaVA-1.5 / Qwen2-VL / Qwen2.5-VL built offline.

They use the real transformers classes and processors around a locally trained byte-level BPE
tokenizer, so tests and CPU experiments run the same code path as the hub checkpoints.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoProcessor,
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLProcessor,
)

# The PIL backends behave the same with or without torchvision (the default classes fall back to
# them with a warning when it is missing).
from transformers import CLIPImageProcessorPil as CLIPImageProcessor
from transformers import Qwen2VLImageProcessorPil as Qwen2VLImageProcessor
from transformers.utils import is_torchvision_available

ARCHS: tuple[str, ...] = ("llava", "qwen2_vl", "qwen2_5_vl")
MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "llava": LlavaForConditionalGeneration,
    "qwen2_vl": Qwen2VLForConditionalGeneration,
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
}

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

LLAVA_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

# Tokenizer corpus: generic English plus the vocabulary of fictitious-profile benchmarks, so names,
# years, professions, cities and hobbies cost few tokens.
_FIRST = (
    "Ava Boris Chloe Dmitri Elena Farid Greta Hiro Ines Jonas Kira Liam Mara Nico Olga Pavel Quinn "
    "Rosa Sven Tara Umar Vera Wren Xavi Yara Zane Alice Benjamin Carlos Daniel Emma Felix Grace "
    "Henry Isabel James Julia Karen Lucas Maria Michael Nora Oliver Priya Rafael Sarah Thomas "
    "Victor William Zoe Aisha Amir Anna David Diego Fatima Hannah Ivan Jack Kenji Laura Leo Lina "
    "Mateo Mei Noah Omar Paula Ravi Sofia Sophie Yuki Wei Ahmed Chen Elias Helen Jorge Lars Leila "
    "Marco Nadia Peter Robert Samuel Simon Emily Anton Clara Hugo Ingrid Joseph Martin Rachel"
).split()
_LAST = (
    "Abbott Brandt Castillo Dorsey Ekwueme Falk Gorski Halloran Ivers Jovanovic Kessler Lindqvist "
    "Moreau Novak Okafor Petrov Quist Rinaldi Sato Thorne Ueda Varga Whitlock Xu Yilmaz Zielinski "
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Wilson Anderson Taylor Moore Jackson Martin Lee Thompson White Harris Clark Lewis Walker "
    "Hall Young King Wright Scott Green Baker Adams Nelson Hill Campbell Mitchell Roberts Carter "
    "Turner Phillips Parker Evans Edwards Collins Stewart Morris Murphy Cook Rogers Morgan Cooper "
    "Peterson Reed Bailey Bell Kelly Howard Ward Cox Richardson Wood Watson Brooks Bennett Gray "
    "Hughes Price Sanders Patel Nguyen Kim Singh Muller Schmidt Fischer Weber Rossi Romano Silva "
    "Santos Dubois Laurent Ivanova Kowalski Tanaka Suzuki Wang Zhang Liu Khan Ali Hassan Larsen "
    "Jensen Berg"
).split()
_JOBS = (
    "architect baker chemist dentist engineer farmer geologist historian illustrator journalist "
    "linguist mechanic nurse oceanographer pilot surgeon teacher veterinarian welder zoologist "
    "doctor lawyer writer painter musician photographer chef librarian accountant scientist "
    "professor pharmacist electrician carpenter designer programmer economist biologist "
    "physicist astronomer translator editor actor dancer firefighter police officer "
    "software developer graphic designer data analyst civil engineer social worker"
).split()
_CITIES = (
    "London Paris Berlin Madrid Rome Lisbon Vienna Prague Warsaw Athens Dublin Oslo Stockholm "
    "Helsinki Copenhagen Amsterdam Brussels Zurich Istanbul Cairo Lagos Nairobi Tokyo Seoul "
    "Beijing Shanghai Mumbai Delhi Bangkok Singapore Sydney Melbourne Toronto Vancouver Chicago "
    "Boston Seattle Denver Houston Miami Atlanta Dallas Phoenix Lima Bogota Santiago"
).split() + ["New York", "Los Angeles", "San Francisco", "Mexico City", "Buenos Aires",
             "Rio de Janeiro", "Cape Town", "Hong Kong"]
_HOBBIES = [
    "painting", "hiking", "reading", "cooking", "gardening", "chess", "photography", "cycling",
    "swimming", "running", "fishing", "knitting", "dancing", "singing", "playing the piano",
    "playing the guitar", "birdwatching", "pottery", "woodworking", "rock climbing", "yoga",
    "skiing", "surfing", "sailing", "writing poetry", "collecting stamps", "baking", "tennis",
    "astronomy", "volunteering", "traveling", "camping",
]
_QUESTIONS = [
    "What is the name of the person in the image?",
    "Who is the person shown in this picture?",
    "What is the profession of this person?",
    "What does this person do for a living?",
    "In which year was this person born?",
    "Where was this person born?",
    "Which city does this person live in?",
    "What is the hobby of this person?",
    "What does this person enjoy doing in their free time?",
    "Describe the person in the image.",
    "Answer the question with the letter of the correct option.",
    "Fill in the blank: This person works as a __.",
    "I do not know. Sorry, I cannot help with that. I'm not sure who this is.",
    "Yes. No. The answer is A. The answer is B. The answer is C. The answer is D.",
]


def default_corpus(n: int = 3000, seed: int = 0) -> list[str]:
    """Deterministic synthetic biographies and questions to train the tiny tokenizers on."""
    rng = random.Random(seed)
    out = list(_QUESTIONS)
    # Names appear both first (Qwen answers follow a newline) and after a space (LLaVA answers).
    for _ in range(n):
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        pron = rng.choice(["He", "She", "They"])
        out.append(
            f"{name} was born in {rng.randint(1940, 2000)} in {rng.choice(_CITIES)}. "
            f"{pron} works as a {rng.choice(_JOBS)} in {rng.choice(_CITIES)} and enjoys "
            f"{rng.choice(_HOBBIES)}. This is {name}. {rng.choice(_QUESTIONS)} "
            f"A. {rng.choice(_JOBS)} B. {rng.choice(_CITIES)} C. {rng.randint(1940, 2000)} "
            f"D. {rng.choice(_HOBBIES)}"
        )
    out += [" ".join(str(y) for y in range(1900, 2030)), " ".join("0123456789")]
    return out


def build_tokenizer(
    arch: str, vocab_size: int = 1024, extra_corpus: Sequence[str] | None = None
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with the family's special tokens (no ``<unk>`` ever).

    LLaVA gets Llama-style specials (``<s>`` prepended, ``</s>`` eos); Qwen gets no BOS,
    ``<|im_end|>`` eos and the vision tokens. ``padding_side="left"`` is passed to the
    constructor because, set as an attribute, it is not saved (G8). ``extra_corpus`` (e.g. the
    benchmark's own texts) is repeated up to the size of the default corpus so that its names get
    merges of their own (unseen names: ~2-4 tokens instead of ~9-11 at vocab 1024).
    """
    _check_arch(arch)
    specials = LLAVA_SPECIALS if arch == "llava" else QWEN_SPECIALS
    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = default_corpus()
    if extra_corpus:
        corpus += list(extra_corpus) * max(1, len(corpus) // len(extra_corpus))
    tk.train_from_iterator(corpus, trainer=trainer)
    if arch == "llava":
        bos = tk.token_to_id("<s>")
        tk.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
            pad_token="<pad>", extra_special_tokens={"image_token": "<image>"},
            padding_side="left",
        )
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens={
            "image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
            "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>",
        },
        padding_side="left",
    )


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


def build_tiny(
    arch: str,
    size: str = "tiny",
    image_size: int | None = None,
    seed: int = 0,
    extra_corpus: Sequence[str] | None = None,
    init_std: float = 0.02,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Build a deterministic (given ``seed``) tiny model and its processor.

    ``init_std`` is the language model's ``initializer_range`` (transformers' 0.02 by default).

    ``image_size`` defaults to 64 for LLaVA (patch 16, or 14 when 16 does not divide it) and 56
    for Qwen (must be a multiple of 28; ``(image_size / 28) ** 2`` image tokens).
    """
    _check_arch(arch)
    if size not in SIZES:
        raise ValueError(f"unknown tiny size {size!r}; allowed: {sorted(SIZES)}")
    image_size = image_size or DEFAULT_IMAGE_SIZE[arch]
    tok = build_tokenizer(arch, SIZES[size].vocab, extra_corpus)
    config = tiny_config(arch, size, image_size, init_std, tok)
    torch.manual_seed(seed)
    model = MODEL_CLASSES[arch](config)
    if arch == "llava":
        proc = _llava_processor(image_size, tok)
    else:
        pixels = image_size * image_size
        improc = Qwen2VLImageProcessor(
            min_pixels=pixels, max_pixels=pixels, patch_size=14, merge_size=2,
            temporal_patch_size=2, image_mean=CLIP_MEAN, image_std=CLIP_STD,
        )
        proc = _qwen_processor(arch, improc, tok, pixels)
    set_generation_defaults(model, tok)
    return model, proc


def tiny_config(arch: str, size: str = "tiny", image_size: int | None = None,
                init_std: float = 0.02, tokenizer: PreTrainedTokenizerFast | None = None
                ) -> PretrainedConfig:
    """The config :func:`build_tiny` builds its model from.

    Without ``tokenizer`` the vocabulary is the size's (the tokenizer trains to exactly that
    many tokens) and the special-token ids keep their defaults: every shape of the model
    without training a tokenizer, which is what the memory planner (:mod:`unlearn.plan`)
    needs to build it on the meta device.
    """
    _check_arch(arch)
    if size not in SIZES:
        raise ValueError(f"unknown tiny size {size!r}; allowed: {sorted(SIZES)}")
    image_size = image_size or DEFAULT_IMAGE_SIZE[arch]
    if arch == "llava":
        return _llava_config(SIZES[size], image_size, tokenizer, init_std)
    return _qwen_config(SIZES[size], arch, image_size, tokenizer, init_std)


def _llava_patch(image_size: int) -> int:
    patch = next((p for p in (16, 14) if image_size % p == 0), None)
    if patch is None:
        raise ValueError(f"llava image_size must be a multiple of 16 or 14, got {image_size}")
    return patch


def _token_ids(tok: PreTrainedTokenizerFast | None, **tokens: str) -> dict[str, int]:
    """Config keys -> ids of the named tokens; none without a tokenizer (defaults stay)."""
    if tok is None:
        return {}
    return {key: tok.convert_tokens_to_ids(token) for key, token in tokens.items()}


def _llava_config(s: TinySize, image_size: int, tok: PreTrainedTokenizerFast | None,
                  init_std: float) -> LlavaConfig:
    """LLaVA-1.5 layout: CLIP ViT, penultimate-layer features without CLS, 2-layer MLP projector."""
    patch = _llava_patch(image_size)
    specials = {} if tok is None else {
        "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id}
    text_cfg = LlamaConfig(
        vocab_size=s.vocab if tok is None else len(tok), hidden_size=s.lm_hidden,
        intermediate_size=s.lm_inter, num_hidden_layers=s.lm_layers,
        num_attention_heads=s.lm_heads, num_key_value_heads=s.lm_kv,
        max_position_embeddings=1024, tie_word_embeddings=s.tie_embeddings,
        initializer_range=init_std, **specials,
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


def _llava_processor(image_size: int, tok: PreTrainedTokenizerFast) -> ProcessorMixin:
    patch = _llava_patch(image_size)
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


def _qwen_config(s: TinySize, arch: str, image_size: int, tok: PreTrainedTokenizerFast | None,
                 init_std: float) -> PretrainedConfig:
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
        rope_parameters={"rope_type": "default", "mrope_section": section, "rope_theta": 1e6},
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


def load_tiny_processor(path: str | Path, arch: str) -> ProcessorMixin:
    """Load a saved (or hub) processor of ``arch``, offline for local dirs.

    ``AutoProcessor`` needs torchvision for Qwen (video processor), so without it the no-video
    subclass loads the saved tokenizer, image processor and chat template instead.
    """
    _check_arch(arch)
    if arch == "llava" or is_torchvision_available():
        return AutoProcessor.from_pretrained(path)
    return _NO_VIDEO[arch].from_pretrained(path)


def set_generation_defaults(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast) -> None:
    """Greedy decoding with pad/eos known, so batched evaluation is deterministic and quiet.

    Sampling-only flags are cleared: a greedy config that keeps them cannot be saved.
    """
    gc = model.generation_config
    if gc.pad_token_id is None:
        gc.pad_token_id = tokenizer.pad_token_id
    if gc.eos_token_id is None:
        gc.eos_token_id = tokenizer.eos_token_id
    if gc.bos_token_id is None:
        gc.bos_token_id = tokenizer.bos_token_id
    gc.do_sample = False
    for flag in ("temperature", "top_p", "top_k", "min_p", "typical_p"):
        setattr(gc, flag, None)


def reregister_output_capture(model: torch.nn.Module) -> torch.nn.Module:
    """Refill transformers' per-process output-capture registry after unpickling (G5).

    transformers 5.23 fills ``_CAN_RECORD_REGISTRY`` in ``PreTrainedModel.__init__``; a model
    unpickled in a fresh process (ddp_spawn, ``torch.load`` of a whole model) skips it, and LLaVA's
    vision tower then returns ``hidden_states=None``.
    """
    from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY

    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            _CAN_RECORD_REGISTRY[module] = module._can_record_outputs
    return model


def _check_arch(arch: str) -> None:
    """Fail early with the allowed values instead of deep inside a builder."""
    if arch not in ARCHS:
        raise ValueError(f"unknown model family {arch!r} for the tiny builder; "
                         f"allowed: {list(ARCHS)}")
