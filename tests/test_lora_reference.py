"""LoRA scope, reference models and one-step direction tests on the tiny models.

Direction: one AdamW step with each objective must move the forget likelihood the right way,
and the reference must come out bit-identical (frozen copy) or functionally identical
(adapter-disabled view of the LoRA student), evaluated in eval mode without gradients.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from peft import PeftModel

import unlearn.train as train_module
from unlearn import vanilla
from unlearn.data.collate import Collator
from unlearn.data.mllmu import MLLMUBench
from unlearn.errors import UserError
from unlearn.methods.gradient import GradientAscent, GradientDifference
from unlearn.methods.kl import KLMinimization
from unlearn.methods.losses import nll
from unlearn.methods.preference import NegativePreferenceOptimization, PreferenceOptimization
from unlearn.methods.rmu import RMU, layer_module
from unlearn.models.families import ARCHS
from unlearn.models.loading import load_model_and_processor, save_checkpoint
from unlearn.models.lora import lora_targets, merge_adapters, prepare_trainable
from unlearn.models.modules import decoder_layers, module_groups
from unlearn.models.reference import (
    AdapterDisabledView,
    FrozenCopy,
    build_reference,
    run_reference,
)
from unlearn.models.tiny import build_tiny
from unlearn.module import UnlearnModule

from .test_pipeline import compose_cfg

LORA = {"scope": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.0,
                                  "target_modules": ["q_proj", "v_proj", "down_proj"]}}


@pytest.fixture(scope="module")
def bench(tiny_bench_dir) -> MLLMUBench:
    return MLLMUBench(str(tiny_bench_dir), forget_ratio=10, seed=0)


@pytest.fixture(scope="module")
def memorised(bench) -> tuple[dict, object]:
    """A tiny LLaVA that has memorised the first forget and retain items (as the vanilla stage
    does), so that unlearning has a likelihood to lower: its state dict and processor."""
    model, processor = build_tiny("llava", "tiny")
    batch = batches(bench, processor, "llava", GradientDifference())
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(30):
        opt.zero_grad()
        (nll(model, batch["forget"]) + nll(model, batch["retain"])).backward()
        opt.step()
    assert forget_nll(model, batch) < 1.0
    return state(model), processor


def memorised_model(memorised) -> tuple[torch.nn.Module, object]:
    model, processor = build_tiny("llava", "tiny")
    model.load_state_dict(memorised[0])
    return model.eval(), memorised[1]


def batches(bench: MLLMUBench, processor, family: str, objective) -> dict:
    """One collated batch of 4 per split the objective needs (aligned splits stay aligned)."""
    sets = objective.train_sets(lambda name: getattr(bench, f"{name}_train")()[:4])
    collate = Collator(processor, family)
    return {name: collate(samples) for name, samples in sets.items()}


def forget_nll(model, batch) -> float:
    with torch.no_grad():
        return nll(model.eval(), batch["forget"]).item()


def one_step(model, objective, batch, reference, lr: float = 1e-3) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    objective(model, batch, reference).loss.backward()
    opt.step()
    model.eval()


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


OBJECTIVES = {
    "ga": GradientAscent,
    "ga_diff": GradientDifference,
    "kl_min": KLMinimization,
    "npo": NegativePreferenceOptimization,
    "po": PreferenceOptimization,
    "rmu": lambda: RMU(layer=0, steering=2.0),
}


@pytest.mark.parametrize("scope", ["all", "lora"])
@pytest.mark.parametrize("method", list(OBJECTIVES))
def test_one_step_raises_forget_nll_and_leaves_reference_untouched(bench, memorised, method,
                                                                    scope):
    model, processor = memorised_model(memorised)
    model, _ = prepare_trainable(model, {"scope": "all"} if scope == "all" else LORA)
    objective = OBJECTIVES[method]()
    batch = batches(bench, processor, "llava", objective)
    reference = build_reference(model, objective.needs_reference)
    ref_out = None
    if reference is not None:
        assert isinstance(reference, AdapterDisabledView if scope == "lora" else FrozenCopy)
        ref_out = reference(**{k: v for k, v in batch["forget"].items() if k != "labels"}).logits
        ref_state = state(reference.viewed)
    before = forget_nll(model, batch)
    # LoRA moves only the (zero-initialised) B matrices in its first step: the usual ~10x
    # larger LoRA learning rate gives the step an effect well above float noise
    one_step(model, objective, batch, reference, lr=1e-2 if scope == "lora" else 1e-3)
    after = forget_nll(model, batch)
    assert after > before + 1e-4, (method, before, after)
    if reference is None:
        return
    again = reference(**{k: v for k, v in batch["forget"].items() if k != "labels"}).logits
    assert torch.allclose(again, ref_out, atol=1e-6)  # the reference still computes P_ref
    if scope == "all":
        assert all(torch.equal(v, ref_state[k]) for k, v in state(reference.viewed).items())
        assert not any(p.requires_grad for p in reference.viewed.parameters())
    else:  # only the adapters moved; the base weights the view runs are untouched
        changed = {k for k, v in state(model).items() if not torch.equal(v, ref_state[k])}
        assert changed and all(".lora_" in k for k in changed)


def test_po_margin_grows_and_refusal_becomes_likelier(bench, memorised):
    model, processor = memorised_model(memorised)
    objective = PreferenceOptimization(beta=0.1)
    batch = batches(bench, processor, "llava", objective)
    # aligned: same prompts, refusal answers
    refusal_prompts = batch["forget_refusal"]["labels"] == -100
    assert batch["forget"]["input_ids"][:, :5].equal(batch["forget_refusal"]["input_ids"][:, :5])
    assert refusal_prompts.any()
    reference = build_reference(model, True)
    margin0 = objective(model, batch, reference).parts["margin"].item()
    refusal0 = nll(model, batch["forget_refusal"]).item()
    one_step(model, objective, batch, reference)
    with torch.no_grad():
        assert objective(model, batch, reference).parts["margin"].item() > margin0
        assert nll(model, batch["forget_refusal"]).item() < refusal0


@pytest.mark.parametrize("scope", ["all", "lora"])
def test_reference_is_eval_and_gradient_free_during_training(bench, scope):
    """Lightning puts the LightningModule in train mode: the reference must stay in eval."""
    model, processor = build_tiny("llava", "tiny")
    model, _ = prepare_trainable(model, {"scope": "all"} if scope == "all" else LORA)
    objective = KLMinimization()
    reference = build_reference(model, True)
    module = UnlearnModule(model, objective, {"lr": 1e-3}, reference=reference)
    module.train()
    seen = []
    layer = decoder_layers(reference.viewed)[0]
    handle = layer.register_forward_hook(
        lambda m, i, o: seen.append((m.training, torch.is_grad_enabled())))
    batch = batches(bench, processor, "llava", objective)
    objective(model.train(), batch, reference)
    handle.remove()
    # LoRA: the layer is shared, so the student's two forwards (train, grad) show too;
    # the reference's forward runs in eval mode without grad in both cases
    student = [(True, True), (True, True)] if scope == "lora" else []
    assert seen == [*student, (False, False)], scope
    assert model.training and reference.training is False
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable, "freezing the reference froze the student"
    if scope == "lora":
        assert list(reference.parameters()) == []  # no second copy of any weight
        assert all(".lora_" in n for n, p in model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_scope_resolves_on_the_language_model(arch):
    model, _ = build_tiny(arch, "tiny")
    n_base = sum(p.numel() for p in model.parameters())
    targets = lora_targets(model, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                   "up_proj", "down_proj"])
    language = module_groups(model)["language"]
    assert targets and all(t.startswith(language[0]) for t in targets)
    assert len(targets) == 7 * len(decoder_layers(model))  # none in the vision tower
    peft_model, counts = prepare_trainable(model, {"scope": "lora", "lora": {"r": 4}})
    assert isinstance(peft_model, PeftModel)
    lora_params = {n: p for n, p in peft_model.named_parameters() if ".lora_" in n}
    n_lora = sum(p.numel() for p in lora_params.values())
    assert counts["trainable"] == n_lora > 0
    assert counts["frozen"] == n_base
    assert counts["by_group"]["lora"] == {"trainable": n_lora, "frozen": 0}
    assert all(p.requires_grad for p in lora_params.values())
    assert sum(p.requires_grad for p in peft_model.parameters()) == len(lora_params)
    with pytest.raises(ValueError, match="matches no linear layer"):
        lora_targets(model, ["fc1"])  # CLIP's MLP: not in the language model


@pytest.mark.parametrize("arch", ARCHS)
def test_merged_model_computes_what_the_adapted_model_computes(bench, arch):
    model, processor = build_tiny(arch, "tiny")
    model, _ = prepare_trainable(model, LORA)
    objective = GradientAscent()
    batch = batches(bench, processor, arch, objective)
    one_step(model, objective, batch, None, lr=1e-2)
    inputs = {k: v for k, v in batch["forget"].items() if k != "labels"}
    with torch.no_grad():
        adapted = model(**inputs).logits
        merged = merge_adapters(model)
        assert not isinstance(merged, PeftModel)
        assert not any(".lora_" in n for n, _ in merged.named_parameters())
        assert torch.allclose(merged(**inputs).logits, adapted, atol=1e-4)
    assert merge_adapters(merged) is merged


def test_rmu_hook_sits_on_the_configured_layer_and_u_is_fixed(bench):
    model, processor = build_tiny("llava", "tiny")  # 2 decoder layers
    objective = RMU(layer=1, seed=5)
    batch = batches(bench, processor, "llava", objective)
    inputs = {k: v for k, v in batch["forget"].items() if k != "labels"}
    with torch.no_grad():
        states = model(**inputs, output_hidden_states=True).hidden_states
    hooks = [len(layer._forward_hooks) for layer in decoder_layers(model)]  # transformers' own
    with torch.no_grad():
        h = objective.hidden(model, batch["forget"])
    # hidden_states[0] = embeddings, [l + 1] = output of layer l, except that the last entry
    # is after the final norm: layer 1 (the last) is checked against the norm's input
    norm_inputs = []
    norm = model.model.language_model.norm
    handle = norm.register_forward_pre_hook(lambda m, args: norm_inputs.append(args[0]))
    with torch.no_grad():
        model(**inputs)
    handle.remove()
    assert torch.allclose(h, norm_inputs[0]) and not torch.allclose(h, states[1])
    with torch.no_grad():
        h0 = RMU(layer=0, seed=5).hidden(model, batch["forget"])
    assert torch.allclose(h0, states[1]) and not torch.allclose(h0, states[2])
    assert layer_module(model, 1) is decoder_layers(model)[1]
    assert [len(layer._forward_hooks) for layer in decoder_layers(model)] == hooks  # removed
    reference = build_reference(model, True)
    objective(model, batch, reference)
    u = objective.u.clone()
    assert u.shape == (model.config.text_config.hidden_size,)
    assert u.norm().item() == pytest.approx(1.0)
    objective(model, batch, reference)
    assert torch.equal(objective.u, u)  # fixed for the run
    assert torch.equal(RMU(layer=1, seed=5).unit(u.numel(), u), u)  # drawn from the seed
    assert not torch.equal(RMU(layer=1, seed=6).unit(u.numel(), u), u)
    with pytest.raises(ValueError, match="method.objective.layer=2 is out of range"):
        RMU(layer=2).hidden(model, batch["forget"])


def test_frozen_copy_and_view_do_not_share_state_with_student():
    model, _ = build_tiny("llava", "tiny")
    copy_ref = build_reference(model, True)
    assert isinstance(copy_ref, FrozenCopy)
    assert all(a.data_ptr() != b.data_ptr()
               for a, b in zip(copy_ref.parameters(), model.parameters(), strict=True))
    assert build_reference(model, False) is None
    peft_model, _ = prepare_trainable(copy.deepcopy(model), LORA)
    view = build_reference(peft_model, True)
    view.eval().requires_grad_(False)  # what UnlearnModule does
    assert any(p.requires_grad for p in peft_model.parameters())


@pytest.mark.parametrize("scope", ["all", "lora"])
def test_retain_finetuned_reference_is_a_trained_frozen_copy(scope):
    """NPO's MLLMU-Bench option: the fine-tune runs on a copy, never on the student."""
    model, _ = build_tiny("llava", "tiny")
    model, _ = prepare_trainable(model, {"scope": "all"} if scope == "all" else LORA)
    student = state(model)
    touched = []

    def finetune(copy_model):
        assert copy_model is not model and not isinstance(copy_model, PeftModel)
        with torch.no_grad():
            copy_model.lm_head.weight.add_(1.0)
        touched.append(copy_model)

    reference = build_reference(model, True, finetune)
    assert isinstance(reference, FrozenCopy) and touched == [reference.viewed]
    assert all(torch.equal(v, student[k]) for k, v in state(model).items())
    assert not any(p.requires_grad for p in reference.parameters())
    assert reference.training is False


class Started(Exception):
    """Stops the vanilla stage at its first training call."""


@pytest.fixture(scope="module")
def npo_cfg(tmp_path_factory):
    return compose_cfg(tmp_path_factory.mktemp("npo"),
                       ["method=npo", "method.reference.source=retain_finetuned"])


def vanilla_start(cfg, bench, monkeypatch) -> tuple[dict, object]:
    """The weights and processor the vanilla stage starts training from."""
    seen = []

    def first_fit(model, processor, *args, **kwargs):
        seen.append((state(model), processor))
        raise Started
    monkeypatch.setattr(vanilla, "fit", first_fit)
    with pytest.raises(Started):
        vanilla._train(cfg, bench.finetune(), Path(cfg.paths.cache_dir) / "states")
    return seen[0]


def run_with_fake_finetune(cfg, student, bench, processor, monkeypatch):
    """run_reference with a fit that records the model it starts from (and its training set)
    and stands for training by adding 1 to lm_head."""
    calls = []

    def fake_fit(ref, proc, family, objective, splits, *args, **kwargs):
        calls.append((state(ref), splits["train"], proc))
        with torch.no_grad():
            ref.lm_head.weight.add_(1.0)
    monkeypatch.setattr(train_module, "fit", fake_fit)
    reference, info = run_reference(cfg, student, NegativePreferenceOptimization(), bench,
                                    processor)
    assert len(calls) == 1
    return reference, info, calls[0]


def test_retain_finetuned_reference_starts_from_the_model_before_the_vanilla_stage(
        npo_cfg, bench, monkeypatch):
    """MLLMU-Bench's oracle: the base model (tiny world: as built before the vanilla stage,
    same tokenizer) fine-tuned on the retain split, not a copy of the vanilla model."""
    base, processor = vanilla_start(npo_cfg, bench, monkeypatch)
    student, _ = load_model_and_processor(npo_cfg.model)  # the vanilla model's architecture
    student.load_state_dict(base)
    with torch.no_grad():  # stands for the vanilla fine-tune: every weight moved
        for p in student.parameters():
            p.add_(0.01)
    before = state(student)
    rng = torch.get_rng_state()
    reference, info, (start, items, proc) = run_with_fake_finetune(
        npo_cfg, student, bench, processor, monkeypatch)
    assert torch.equal(torch.get_rng_state(), rng)  # building the base left the generator
    assert start.keys() == base.keys() and all(torch.equal(start[k], base[k]) for k in base)
    assert not torch.equal(start["lm_head.weight"], before["lm_head.weight"])
    assert proc is processor
    assert [s.profile_id for s in items] == [s.profile_id for s in bench.retain_train()]
    assert {s.profile_id for s in items} == set(bench.retain_ids)
    assert isinstance(reference, FrozenCopy)
    assert torch.equal(reference.viewed.lm_head.weight, base["lm_head.weight"] + 1.0)
    assert not any(p.requires_grad for p in reference.parameters())
    assert all(torch.equal(v, before[k]) for k, v in state(student).items())
    assert info == {"reference": {"source": "retain_finetuned", "start": "base",
                                  "base": "tiny (model.tiny.seed=0)",
                                  "retain_items": len(bench.retain_train())}}

    # start=vanilla: a copy of the pre-unlearning model (it knows the forget people)
    cfg = OmegaConf.merge(npo_cfg, {"method": {"reference": {"finetune": {"start": "vanilla"}}}})
    reference, info, (start, _, _) = run_with_fake_finetune(cfg, student, bench, processor,
                                                            monkeypatch)
    assert all(torch.equal(start[k], before[k]) for k in before)
    assert info["reference"]["start"] == "vanilla" and "base" not in info["reference"]

    # the base must score the student's token ids
    _, other = build_tiny("llava", "tiny")
    with pytest.raises(UserError, match="tokenizer differs"):
        run_with_fake_finetune(npo_cfg, student, bench, other, monkeypatch)
    initial, info = run_reference(compose_cfg(Path(npo_cfg.paths.root), ["method=npo"]),
                                  student, NegativePreferenceOptimization(), bench, processor)
    assert isinstance(initial, FrozenCopy) and info == {"reference": {"source": "initial"}}


def test_retain_finetuned_reference_of_a_pretrained_model_starts_from_pretrained_id(
        npo_cfg, bench, tmp_path, monkeypatch):
    """For a real model the base is model.pretrained_id (here a saved tiny checkpoint)."""
    model, processor = build_tiny("llava", "tiny")
    save_checkpoint(model, processor, tmp_path / "base")
    cfg = OmegaConf.merge(npo_cfg, {"model": {"source": "pretrained",
                                              "pretrained_id": str(tmp_path / "base")}})
    student = copy.deepcopy(model)
    with torch.no_grad():
        student.lm_head.weight.mul_(2.0)
    _, info, (start, _, _) = run_with_fake_finetune(cfg, student, bench, processor,
                                                    monkeypatch)
    assert all(torch.equal(v, start[k]) for k, v in state(model).items())
    assert info["reference"]["base"] == str(tmp_path / "base")
