"""Every real model config loads a local folder in the hub layout through the pipeline's own path.

A tiny model of each family is saved with ``save_pretrained`` (model + processor), then the real
config (``model=llava7b`` ...) with ``model.pretrained_id=<folder>`` goes through
:func:`unlearn.vanilla.base_model` / :func:`unlearn.vanilla.vanilla_model` and
:func:`unlearn.models.lora.prepare_trainable`, exactly as a 7B run does; only the weights are tiny.
"""

from __future__ import annotations

import copy
import shutil

import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from tests.conftest import CONF
from unlearn.config import validate
from unlearn.data.collate import Collator
from unlearn.data.schema import Sample
from unlearn.errors import UserError
from unlearn.methods.losses import logits_of
from unlearn.models.loading import MODEL_CLASSES, load_model_and_processor
from unlearn.models.lora import prepare_trainable
from unlearn.models.tiny import SIZES, build_tiny
from unlearn.vanilla import base_model, vanilla_model

# real config -> (family, tiny size of its twin). Qwen2.5-VL-3B ties lm_head to the embeddings,
# as the "small" size does.
CONFIGS = {
    "llava7b": ("llava", "tiny"),
    "llava13b": ("llava", "tiny"),
    "qwen2vl7b": ("qwen2_vl", "tiny"),
    "qwen25vl3b": ("qwen2_5_vl", "small"),
}
# LoRA r 16 on q, k, v, o, gate, up, down of every decoder layer: r * (in + out) per module.
# tiny: hidden 64, kv 32 (2 of 4 heads of 16), ffn 256, 2 layers:
#   16 * (128 + 96 + 96 + 128 + 3 * 320) = 22_528 per layer
# small: hidden 192, kv 64 (2 of 6 heads of 32), ffn 512, 4 layers:
#   16 * (384 + 256 + 256 + 384 + 3 * 704) = 54_272 per layer
LORA_PARAMS = {"tiny": 2 * 22_528, "small": 4 * 54_272}
IMG = Image.new("RGB", (64, 64), (200, 30, 30))
SAMPLES = [
    Sample("p", "Who is this?", "This is Ava Abbott.", "generation", "image_text", image=IMG),
    Sample("p", "Ava Abbott works as a __.", "pilot", "cloze", "text_only"),
]


def make(overrides: list[str]):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """One saved tiny model per (family, size): folder, model and processor."""
    out = {}
    for family, size in sorted(set(CONFIGS.values())):
        model, processor = build_tiny(family, size, seed=1)
        folder = tmp_path_factory.mktemp(f"{family}-{size}")
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        out[family, size] = folder, model.eval(), processor
    return out


def _logits(model, processor, family: str) -> torch.Tensor:
    with torch.no_grad():
        return logits_of(model, Collator(processor, family)(SAMPLES))


@pytest.mark.parametrize(("twin", "real"), [
    ("tiny_llava", "llava7b"), ("tiny_llava", "llava13b"), ("tiny_qwen2vl", "qwen2vl7b"),
    ("tiny_qwen25vl", "qwen25vl3b")])
def test_every_real_model_has_an_offline_twin_of_its_class(twin, real):
    tiny_cfg, real_cfg = make([f"model={twin}", "method=rmu"]), make([f"model={real}"])
    assert tiny_cfg.model.family == real_cfg.model.family
    assert (tiny_cfg.model.source, real_cfg.model.source) == ("tiny", "pretrained")
    model, _ = load_model_and_processor(tiny_cfg.model)
    assert type(model) is MODEL_CLASSES[real_cfg.model.family]
    assert tiny_cfg.method.objective.layer < model.config.text_config.num_hidden_layers == 4


@pytest.mark.parametrize("option", list(CONFIGS))
def test_real_config_loads_a_hub_folder_and_applies_its_lora(option, saved):
    family, size = CONFIGS[option]
    folder, reference, ref_processor = saved[family, size]
    cfg = make([f"model={option}", f"model.pretrained_id={folder}", "model.dtype=float32"])
    validate(cfg)
    assert (cfg.model.family, cfg.model.source, cfg.trainable_modules.scope) == (
        family, "pretrained", "lora")
    model, processor = base_model(cfg, bench=None)
    assert type(model) is MODEL_CLASSES[family] is type(reference) and not model.training
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in reference.parameters())
    assert model.config.tie_word_embeddings == (size == "small")
    assert processor.chat_template == ref_processor.chat_template
    assert torch.equal(_logits(model, processor, family), _logits(reference, ref_processor, family))

    peft_model, counts = prepare_trainable(model, cfg.trainable_modules)
    trainable = {n: p.numel() for n, p in peft_model.named_parameters() if p.requires_grad}
    assert counts["trainable"] == sum(trainable.values()) == LORA_PARAMS[size]
    assert counts["by_group"]["lora"]["trainable"] == LORA_PARAMS[size]
    wrapped = {n.split(".lora_")[0] for n in trainable}
    assert len(wrapped) == 7 * SIZES[size].lm_layers
    # Qwen2.5-VL's vision MLPs are gate/up/down_proj too: none of them may be wrapped
    assert all(".language_model.layers." in n for n in wrapped)


@pytest.mark.parametrize("option", ["llava7b", "qwen25vl3b"])
def test_a_published_vanilla_folder_loads_in_the_configs_dtype(option, saved):
    """``model.vanilla.checkpoint=<folder>`` skips the stage; bfloat16 as the config says."""
    family, size = CONFIGS[option]
    folder, reference, ref_processor = saved[family, size]
    cfg = make([f"model={option}", f"model.vanilla.checkpoint={folder}"])
    assert cfg.model.dtype == "bfloat16"
    model, processor, info = vanilla_model(cfg, bench=None)
    assert info == {"vanilla": str(folder), "fingerprint": f"published:{folder}"}
    weights, ref_weights = model.state_dict(), reference.state_dict()
    assert weights.keys() == ref_weights.keys()
    assert all(w.dtype == torch.bfloat16 and torch.equal(w, ref_weights[k].to(torch.bfloat16))
               for k, w in weights.items())
    # same bfloat16 weights; from_pretrained keeps the rotary buffers in float32, hence the atol
    expected = _logits(copy.deepcopy(reference).to(torch.bfloat16), ref_processor, family)
    assert torch.allclose(_logits(model, processor, family).float(), expected.float(), atol=2e-2)


def _copy_without(folder, tmp_path, *names: str):
    out = tmp_path / "copy"
    shutil.copytree(folder, out)
    for name in names:
        (out / name).unlink()
    return out


@pytest.mark.parametrize(("remove", "missing"), [
    (None, "config.json; model.safetensors or model.safetensors.index.json; tokenizer.json or "
           "tokenizer_config.json; preprocessor_config.json or processor_config.json"),
    (["config.json"], "config.json"),
    (["processor_config.json"], "preprocessor_config.json or processor_config.json"),
    (["tokenizer.json", "tokenizer_config.json"], "tokenizer.json or tokenizer_config.json"),
])
def test_a_folder_not_in_the_hub_layout_names_what_is_missing(remove, missing, saved, tmp_path):
    folder, _, _ = saved["qwen2_5_vl", "small"]
    if remove is None:
        bad = tmp_path / "empty"
        bad.mkdir()
    else:
        bad = _copy_without(folder, tmp_path, *remove)
    cfg = make(["model=qwen25vl3b", f"model.pretrained_id={bad}"])
    with pytest.raises(UserError) as err:
        load_model_and_processor(cfg.model)
    assert str(err.value) == (f"model folder '{bad}' is not in the hub layout: missing {missing} "
                              "(save_pretrained of the model and its processor writes them)")


def test_a_folder_of_another_family_is_refused(saved):
    folder, _, _ = saved["qwen2_vl", "tiny"]
    cfg = make(["model=llava13b", f"model.pretrained_id={folder}"])
    with pytest.raises(UserError) as err:
        load_model_and_processor(cfg.model)
    assert str(err.value) == (f"model folder '{folder}' holds a 'qwen2_vl' model, but "
                              "model.family is 'llava': pick the model config of that family")
