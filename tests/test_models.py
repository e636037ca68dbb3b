"""Tiny model builders, checkpoint loading and trainable scopes on all three architectures."""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from PIL import Image
from transformers import AutoProcessor
from transformers.utils.output_capturing import _CAN_RECORD_REGISTRY

from unlearn.errors import UserError
from unlearn.models import (
    SCOPES,
    build_tiny,
    load_checkpoint,
    load_model_and_processor,
    loading,
    module_groups,
    processors,
    reregister_output_capture,
    save_checkpoint,
    select_trainable,
    unused_parameters,
)
from unlearn.models.tokenizer import build_tokenizer

ARCHS = ["llava", "qwen2_vl", "qwen2_5_vl"]
IMAGE_TOKENS = {"llava": 16, "qwen2_vl": 4, "qwen2_5_vl": 4}  # defaults: 64/16 px, (56/28)^2
QUESTIONS = ["Who is this?", "What is the profession of the person shown in this picture?"]


def _prompts(processor, questions: list[str]) -> list[str]:
    return [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
            add_generation_prompt=True,
        )
        for q in questions
    ]


def _images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (64, 64), (40 * i, 200 - 30 * i, 90)) for i in range(n)]


def _batch(processor, questions: list[str], answers: list[str] | None = None) -> dict:
    texts = _prompts(processor, questions)
    if answers:
        eos = processor.tokenizer.eos_token
        texts = [t + " " + a + eos for t, a in zip(texts, answers, strict=True)]
    return dict(processor(images=_images(len(texts)), text=texts, padding=True,
                          return_tensors="pt"))


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", ARCHS)
def test_forward_loss_is_ln_vocab_at_init(arch):
    model, processor = build_tiny(arch, "tiny")
    batch = _batch(processor, QUESTIONS, ["Ava Abbott", "chemist"])
    image_token = model.config.image_token_id
    assert (batch["input_ids"] == image_token).sum(1).tolist() == [IMAGE_TOKENS[arch]] * 2
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    loss = model(**batch, labels=labels).loss
    vocab = model.config.text_config.vocab_size
    assert vocab == 512
    assert loss.item() == pytest.approx(math.log(vocab), rel=0.1)
    loss.backward()


@pytest.mark.parametrize("arch", ARCHS)
def test_left_padded_batched_generate_matches_single(arch):
    model, processor = build_tiny(arch, "tiny")
    batch = _batch(processor, QUESTIONS)
    assert processor.tokenizer.padding_side == "left"
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][:, -1].all()
    gen = dict(max_new_tokens=5, min_new_tokens=5)
    out = model.generate(**batch, **gen)
    assert out.shape == (2, batch["input_ids"].shape[1] + 5)
    for i, question in enumerate(QUESTIONS):
        texts = _prompts(processor, [question])
        single = processor(images=_images(2)[i : i + 1], text=texts, return_tensors="pt")
        assert torch.equal(model.generate(**single, **gen)[0, -5:], out[i, -5:])


def test_builds_are_deterministic_and_sized():
    a, _ = build_tiny("llava", "tiny", seed=3)
    b, _ = build_tiny("llava", "tiny", seed=3)
    c, _ = build_tiny("llava", "tiny", seed=4)
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)
    small = {arch: _n_params(build_tiny(arch, "small")[0]) for arch in ARCHS}
    assert small == {"llava": 2_664_320, "qwen2_vl": 3_014_976, "qwen2_5_vl": 3_212_224}


@pytest.mark.parametrize("arch", ARCHS)
def test_init_std_scales_the_language_model_not_the_vision_tower(arch):
    """Same random stream, wider normal: LM weights scale exactly by 4; the vision tower stays."""
    a, _ = build_tiny(arch, "tiny", seed=1)
    b, _ = build_tiny(arch, "tiny", seed=1, init_std=0.08)
    assert b.config.text_config.initializer_range == 0.08
    lm_a, lm_b = a.model.language_model, b.model.language_model
    for name in ("embed_tokens.weight", "layers.0.self_attn.q_proj.weight",
                 "layers.1.mlp.down_proj.weight"):
        assert torch.allclose(lm_a.get_parameter(name) * 4, lm_b.get_parameter(name), atol=1e-6)
    assert lm_b.get_parameter("layers.0.self_attn.q_proj.weight").std().item() == pytest.approx(
        0.08, rel=0.05)
    vision = "vision_tower" if arch == "llava" else "visual"
    pairs = zip(getattr(a.model, vision).state_dict().values(),
                getattr(b.model, vision).state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)


@pytest.mark.parametrize(("arch", "family_theta"), [("llava", 1e4), ("qwen2_vl", 1e6),
                                                    ("qwen2_5_vl", 1e6)])
def test_rope_theta_defaults_to_the_family_and_sets_the_rotary_frequencies(arch, family_theta):
    """head_dim 16 (64 / 4 heads): inv_freq[i] = theta ** (-2i / 16), exactly."""
    default, _ = build_tiny(arch, "tiny", seed=1)
    tuned, _ = build_tiny(arch, "tiny", seed=1, rope_theta=100.0)
    assert default.config.text_config.rope_parameters["rope_theta"] == family_theta
    pairs = zip(default.state_dict().values(), tuned.state_dict().values(), strict=True)
    assert all(torch.equal(x, y) for x, y in pairs)  # same weights: only the rotary base differs
    inv_freq = tuned.model.language_model.rotary_emb.inv_freq
    assert inv_freq.shape == (8,)
    assert inv_freq[1].item() == pytest.approx(100.0 ** (-2 / 16))
    assert inv_freq[7].item() == pytest.approx(100.0 ** (-14 / 16))


def test_image_size_sets_image_tokens():
    llava, proc = build_tiny("llava", "tiny", image_size=112)  # patch 16 -> 7x7 tokens
    assert llava.config.image_seq_length == 49 and proc.patch_size == 16
    assert build_tiny("llava", "tiny", image_size=42)[0].config.vision_config.patch_size == 14
    qwen, proc = build_tiny("qwen2_vl", "tiny", image_size=112)
    batch = proc(images=_images(1), text=_prompts(proc, ["Who?"]), return_tensors="pt")
    assert (batch["input_ids"] == qwen.config.image_token_id).sum() == 16
    with pytest.raises(ValueError, match="multiple of 28"):
        build_tiny("qwen2_5_vl", "tiny", image_size=64)
    with pytest.raises(ValueError, match=r"allowed: \['base', 'bench_65m', 'small', 'tiny'\]"):
        build_tiny("llava", "huge")
    with pytest.raises(ValueError) as err:
        build_tiny("idefics2", "tiny")
    assert str(err.value) == ("unknown model family 'idefics2' for the tiny builder; "
                              "allowed: ['llava', 'qwen2_vl', 'qwen2_5_vl']")


def test_tokenizer_keeps_benchmark_words_short():
    tok = build_tokenizer("llava", 1024)
    assert tok("hi")["input_ids"][0] == tok.bos_token_id and tok.padding_side == "left"
    words = ["1975", "surgeon", "London", "playing the piano", "Elena Kessler", "Beatrix Holloway"]
    n_tokens = {w: len(tok(" " + w, add_special_tokens=False)["input_ids"]) for w in words}
    assert n_tokens == dict(zip(words, [2, 1, 1, 3, 7, 11], strict=True))
    tuned = build_tokenizer("qwen2_vl", 1024, extra_corpus=["Beatrix Holloway was born in 1960."])
    assert len(tuned(" Beatrix Holloway")["input_ids"]) == 4
    assert tuned.bos_token_id is None and tuned.eos_token == "<|im_end|>"


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_round_trip_gives_identical_logits(arch, tmp_path):
    model, processor = build_tiny(arch, "tiny", seed=1)
    save_checkpoint(model, processor, tmp_path)
    loaded, loaded_proc = load_checkpoint(tmp_path, arch, dtype="float32")
    assert type(loaded) is type(model) and not loaded.training
    assert type(loaded_proc) is type(processor)
    assert loaded_proc.tokenizer.padding_side == "left"
    assert loaded_proc.chat_template == processor.chat_template
    assert loaded.generation_config.do_sample is False
    assert loaded.generation_config.pad_token_id == processor.tokenizer.pad_token_id
    batch, loaded_batch = _batch(processor, QUESTIONS), _batch(loaded_proc, QUESTIONS)
    assert all(torch.equal(batch[k], loaded_batch[k]) for k in batch)
    with torch.no_grad():
        assert torch.equal(model.eval()(**batch).logits, loaded(**loaded_batch).logits)


def test_reregister_output_capture_restores_unpickled_llava():
    model, processor = build_tiny("llava", "tiny")
    batch = _batch(processor, QUESTIONS[:1])
    saved = dict(_CAN_RECORD_REGISTRY)
    _CAN_RECORD_REGISTRY.clear()  # the state of a fresh process that unpickled the model (G5)
    try:
        with pytest.raises(TypeError):
            model(**batch)
        reregister_output_capture(model)
        assert model(**batch).logits.shape[0] == 1
    finally:
        _CAN_RECORD_REGISTRY.update(saved)


EXPECTED_GROUPS = {
    "llava": {
        "vision": ["model.vision_tower."],
        "projector": ["model.multi_modal_projector."],
        "language": ["model.language_model.", "lm_head."],
    },
    "qwen2_vl": {
        "vision": ["model.visual.patch_embed.", "model.visual.blocks."],
        "projector": ["model.visual.merger."],
        "language": ["model.language_model.", "lm_head."],
    },
}
EXPECTED_GROUPS["qwen2_5_vl"] = EXPECTED_GROUPS["qwen2_vl"]
# LLaVA reads CLIP hidden_states[-2]: the last of 2 layers (16 tensors) + post_layernorm are unused
LLAVA_UNUSED = 18


@pytest.fixture(scope="module")
def models() -> dict:
    return {arch: build_tiny(arch, "tiny")[0] for arch in ARCHS}


def _starts(name: str, prefixes: list[str]) -> bool:
    return name.startswith(tuple(prefixes))


@pytest.mark.parametrize("arch", ARCHS)
def test_module_groups_cover_every_parameter(arch, models):
    model = models[arch]
    groups = module_groups(model)
    assert groups == EXPECTED_GROUPS[arch]
    names = [n for n, _ in model.named_parameters()]
    for name in names:
        assert sum(_starts(name, prefixes) for prefixes in groups.values()) == 1, name
    unused = unused_parameters(model)
    assert len(unused) == (LLAVA_UNUSED if arch == "llava" else 0)
    assert all(n.startswith(("model.vision_tower.encoder.layers.1.",
                             "model.vision_tower.post_layernorm.")) for n in unused)


@pytest.mark.parametrize("scope", ["all", "vision", "language", "none"])
@pytest.mark.parametrize("arch", ARCHS)
def test_select_trainable_scopes(arch, scope, models):
    model = models[arch]
    groups = EXPECTED_GROUPS[arch]
    counts = select_trainable(model, scope)
    params = dict(model.named_parameters())
    unused = set(unused_parameters(model))
    allowed = [p for g in SCOPES[scope] if g in groups for p in groups[g]]
    trainable = {n for n, p in params.items() if p.requires_grad}
    expected = {n for n in params if _starts(n, allowed) and n not in unused}
    assert trainable == expected
    assert counts["trainable"] == sum(params[n].numel() for n in trainable)
    assert counts["trainable"] + counts["frozen"] == _n_params(model)
    assert set(counts["by_group"]) == {"vision", "projector", "language"}
    for group, c in counts["by_group"].items():
        size = sum(p.numel() for n, p in params.items() if _starts(n, groups[group]))
        assert c["trainable"] + c["frozen"] == size
        if group not in SCOPES[scope]:
            assert c["trainable"] == 0
    if scope == "language":
        assert {"lm_head.weight", "model.language_model.embed_tokens.weight"} <= trainable
    if scope in ("all", "vision"):
        assert trainable and not any(params[n].requires_grad for n in unused)


@pytest.mark.parametrize("scope", ["all", "vision"])
@pytest.mark.parametrize("arch", ARCHS)
def test_only_scope_gets_gradients_and_all_of_it(arch, scope):
    """Every trainable parameter gets a gradient (DDP without find_unused_parameters)."""
    model, processor = build_tiny(arch, "tiny")
    select_trainable(model, scope)
    batch = _batch(processor, QUESTIONS, ["Ava Abbott", "chemist"])
    model(**batch, labels=batch["input_ids"]).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, p in model.named_parameters() if p.requires_grad}
    if scope == "vision":
        groups = EXPECTED_GROUPS[arch]
        assert all(_starts(n, groups["vision"] + groups["projector"]) for n in with_grad)
        assert any(_starts(n, groups["projector"]) for n in with_grad)


def test_select_trainable_on_peft_model():
    model, _ = build_tiny("llava", "tiny")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)")
    peft_model = get_peft_model(model, lora)
    groups = module_groups(peft_model)
    assert groups["projector"] == ["base_model.model.model.multi_modal_projector."]
    assert len(unused_parameters(peft_model)) == LLAVA_UNUSED
    counts = select_trainable(peft_model, "vision")
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all(_starts(n, groups["vision"] + groups["projector"]) for n in trainable)
    assert counts["by_group"]["language"]["trainable"] == 0
    # adapter weights form their own group, trained only by the "lora" scope
    assert set(counts["by_group"]) == {"vision", "projector", "language", "lora"}
    assert counts["by_group"]["lora"]["trainable"] == 0 < counts["by_group"]["lora"]["frozen"]


def test_bad_scope_names_allowed_scopes(models):
    allowed = r"'all', 'vision', 'language', 'lm_connector', 'projector', 'none'"
    with pytest.raises(ValueError, match=allowed):
        select_trainable(models["llava"], "lm_only")


def _cfg(**overrides) -> dict:
    cfg = {"name": "m", "family": "llava", "source": "tiny", "pretrained_id": None,
           "dtype": "float32", "attn_implementation": None,
           "tiny": {"size": "tiny", "image_size": None, "seed": 0}}
    return {**cfg, **overrides}


def test_load_tiny_from_config():
    model, processor = load_model_and_processor(
        _cfg(family="qwen2_5_vl", dtype="bfloat16", attn_implementation="eager"))
    wide, _ = load_model_and_processor(
        _cfg(tiny={"size": "tiny", "image_size": None, "seed": 0, "init_std": 0.05}))
    assert wide.config.text_config.initializer_range == 0.05
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration" and not model.training
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.config._attn_implementation == "eager"
    reference, _ = build_tiny("qwen2_5_vl", "tiny", seed=0)
    assert torch.equal(model.lm_head.weight, reference.lm_head.weight.to(torch.bfloat16))
    assert processor.tokenizer.padding_side == "left"


@pytest.mark.parametrize("attn", ["eager", None])
@pytest.mark.parametrize("arch", ARCHS)
def test_load_pretrained_calls_from_pretrained(arch, attn, monkeypatch):
    model_calls, proc_calls = [], []
    model, processor = build_tiny(arch, "tiny")
    gc = model.generation_config
    gc.do_sample, gc.temperature, gc.pad_token_id = True, 0.7, None  # as some hub configs ship

    def fake_model(cls, source, **kwargs):
        model_calls.append((cls, source, kwargs))
        return model

    def fake_processor(cls, source, **kwargs):
        proc_calls.append(source)
        return processor

    monkeypatch.setattr(loading.MODEL_CLASSES[arch], "from_pretrained", classmethod(fake_model))
    for proc_cls in (AutoProcessor, *processors._NO_VIDEO.values(),
                     *processors._WITH_VIDEO.values()):
        monkeypatch.setattr(proc_cls, "from_pretrained", classmethod(fake_processor))
    got_model, got_proc = load_model_and_processor(_cfg(
        family=arch, source="pretrained", pretrained_id="org/some-model", dtype="bfloat16",
        attn_implementation=attn))
    expected_kwargs = {"dtype": torch.bfloat16, "use_safetensors": True,
                       "trust_remote_code": False} | (
        {"attn_implementation": attn} if attn else {})
    assert model_calls == [(loading.MODEL_CLASSES[arch], "org/some-model", expected_kwargs)]
    assert proc_calls == ["org/some-model"]
    assert got_model is model and got_proc is processor
    assert (gc.do_sample, gc.temperature) == (False, None)
    assert gc.pad_token_id == processor.tokenizer.pad_token_id


@pytest.mark.parametrize(("key", "value", "allowed"), [
    ("family", "idefics2", "'llava', 'qwen2_vl', 'qwen2_5_vl'"),
    ("source", "hub", "'tiny', 'pretrained'"),
    ("dtype", "fp8", "'float32', 'bfloat16', 'float16'"),
])
def test_bad_config_values_name_allowed_values(key, value, allowed):
    with pytest.raises(ValueError, match=allowed):
        load_model_and_processor(_cfg(**{key: value}))


@pytest.mark.parametrize("arch", ARCHS)
def test_label_position_logits_match_full_logits(arch):
    """nll() runs the LM head on labelled positions only; every reduction must be unchanged."""
    from unlearn.methods.losses import IGNORE, label_logits, nll, reduce_nll, token_logprobs

    model, processor = build_tiny(arch, "tiny")
    processor.tokenizer.padding_side = "right"
    batch = _batch(processor, QUESTIONS, ["Ava Abbott", "a chemist from Oslo"])
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, IGNORE)
    labels[:, : labels.shape[1] - 8] = IGNORE  # a ragged answer-only scope
    batch["labels"] = labels
    logits, targets = label_logits(model, batch)
    assert logits.shape[1] == 8 < batch["input_ids"].shape[1] - 1  # 8 of T - 1 positions
    full = token_logprobs(model(**{k: v for k, v in batch.items() if k != "labels"}).logits,
                          labels)
    for reduction in ("token_mean", "sequence_sum", "sequence_mean"):
        assert torch.allclose(nll(model, batch, reduction), reduce_nll(*full, reduction),
                              atol=1e-5)


def test_weights_load_only_from_safetensors(tmp_path):
    """A checkpoint whose weights are a pickle (pytorch_model.bin) is refused, never unpickled."""
    import pytest
    from omegaconf import OmegaConf

    from unlearn.models.loading import load_checkpoint, load_model_and_processor

    model, processor = load_model_and_processor(OmegaConf.create(
        {"family": "llava", "source": "tiny", "tiny": {"size": "tiny", "image_size": 32}}))
    import torch

    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(UserError, match=r"missing model\.safetensors or model\.safetensors"
                       r"\.index\.json \(pytorch_model\*\.bin is never read: weights load "
                       r"from safetensors only\)"):
        load_checkpoint(tmp_path, "llava")
