"""VKD (visual knowledge distillation): feature distances and weights by hand, the teacher is
the pre-unlearning model, its features cached once per distinct fixed image, layers and
scopes checked, a short training run moves the visual side only, saliency masks hold."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from unlearn.config import ConfigError, build_objective, validate
from unlearn.data.collate import Collator
from unlearn.data.mllmu import MLLMUBench
from unlearn.data.schema import Sample
from unlearn.data.views import PairCollator
from unlearn.methods.base import summed
from unlearn.methods.distill import forward_kl, kl_mask, selected
from unlearn.methods.losses import logits_of, nll
from unlearn.methods.mmunlearner import MMUnlearner
from unlearn.methods.saliency import trainable
from unlearn.methods.vkd import (
    VKD,
    Features,
    ScopeError,
    feature_distance,
    image_keys,
    token_distance,
)
from unlearn.models import build_tiny, module_groups, select_trainable
from unlearn.models.modules import group_of
from unlearn.pipeline import objective_setup
from unlearn.train import fit

from .test_config import make
from .test_divergence import TRAINER, tiny_model

NOISE = {"name": "random_noise"}
WHITE = {"name": "white"}


# --------------------------------------------------------------------------- distances by hand
def test_token_distance_by_hand():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    # mse: squared error averaged over the width
    assert token_distance(a, b, "mse").tolist() == [2.0, 4.5]  # (0 + 4) / 2, (9 + 0) / 2
    # cosine: 1 - <a, b> / (|a| |b|) = 1 - 1/sqrt(5), 1 - 16 / (5 * 4)
    torch.testing.assert_close(token_distance(a, b, "cosine"),
                               torch.tensor([1 - 1 / math.sqrt(5), 0.2]))
    assert token_distance(a, a, "cosine").abs().max() < 1e-6
    assert token_distance(a, 3 * a, "cosine").abs().max() < 1e-6  # scale-free
    with pytest.raises(ValueError, match="is not one of"):
        token_distance(a, b, "l1")


def test_feature_distance_means_per_image_then_weighs_features():
    # feature 1: image 0 has 1 token, image 1 has 2 (Qwen-like unequal images)
    s1 = torch.tensor([[2.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
    t1 = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    # per token mse: 4/2 = 2 | 9/2 = 4.5, 1/2 = 0.5 -> image means 2, 2.5 -> 2.25
    # (a token mean would give 7/3)
    s2 = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    t2 = torch.tensor([[0.0, 0.0], [0.0, math.sqrt(6.0)]])
    # per token mse: 1 | 3 -> image means 1, 3 -> 2
    student = Features([s1, s2], [[1, 2], [1, 1]])
    target = Features([t1, t2], [[1, 2], [1, 1]])
    assert feature_distance(student, target, "mse", [1.0, 1.0]).item() == pytest.approx(2.125)
    # weights 3 : 1 -> (3 * 2.25 + 2) / 4
    assert feature_distance(student, target, "mse", [3.0, 1.0]).item() == pytest.approx(2.1875)
    assert feature_distance(student, target, "mse", [1.0, 0.0]).item() == pytest.approx(2.25)
    with pytest.raises(ValueError, match="differ in shape"):
        feature_distance(student, Features([t1, t2], [[2, 1], [1, 1]]), "mse", [1.0, 1.0])


def test_features_split_per_image_and_back():
    f = Features([torch.arange(6.0).reshape(3, 2), torch.ones(2, 1)], [[1, 2], [1, 1]])
    images = f.per_image()
    assert [[t.shape[0] for t in im] for im in images] == [[1, 1], [2, 1]]
    back = Features.from_images(images)
    assert back.sizes == f.sizes and all(torch.equal(a, b) for a, b in
                                         zip(back.values, f.values, strict=True))


# --------------------------------------------------------------------------- on tiny models
def _samples(n: int, split: str, colours: int | None = None) -> list[Sample]:
    """``n`` image+text items; item i shows portrait i mod ``colours`` (default: all differ)."""
    k = colours or n
    return [Sample(profile_id=f"p{i % k}", question=f"What is the hobby of person {i}?",
                   answer=f"chess number {i}", task="generation", modality="image_text",
                   split=split,
                   image=Image.new("RGB", (64, 64), (40 * (i % k) % 255, 90, 200 - 30 * (i % k))))
            for i in range(n)]


def _prepared(arch: str = "llava", scope: str = "vision", **kwargs):
    model, processor = build_tiny(arch, size="small")
    select_trainable(model, scope)
    objective = VKD(**{"perturbation": NOISE, **kwargs})
    objective.prepare(model, {}, None)
    return model, processor, objective


def _batch(objective: VKD, processor, arch: str, n: int = 2, retain_colours: int | None = None):
    pair = PairCollator(processor, arch, objective.views["forget"])
    return {"forget": pair(_samples(n, "forget")),
            "retain": Collator(processor, arch)(_samples(2 * n, "retain", retain_colours))}


def _nudge(model: torch.nn.Module, scale: float = 0.05, seed: int = 0) -> None:
    """Move every trainable parameter, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in trainable(model).values():
            p.add_(scale * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl", "qwen2_5_vl"])
def test_teacher_is_the_pre_unlearning_model(arch):
    """Teacher features (the student run with the snapshot) equal a frozen copy's, bit for bit,
    after the student moved; the projector feature is what the language model receives."""
    model, processor, objective = _prepared(arch, cache_teacher=False)
    frozen = copy.deepcopy(model)
    batch = _batch(objective, processor, arch)["retain"]
    _nudge(model)
    teacher = objective.teacher_features(model, batch, cache=False)
    copy_features = objective.features(frozen, batch)
    student = objective.features(model, batch)
    for t, c, s in zip(teacher.values, copy_features.values, student.values, strict=True):
        assert torch.equal(t, c)
        assert not torch.allclose(t, s)
    n_images = 4
    assert all(len(sizes) == n_images for sizes in teacher.sizes)
    if arch == "llava":  # CLIP layer 1 with CLS (16 + 1 tokens), projector without CLS
        assert teacher.sizes == [[17] * 4, [16] * 4]
    else:  # 56 px: 4 x 4 patches, merged 2 x 2 by the merger
        assert teacher.sizes == [[16] * 4, [4] * 4]
    with torch.no_grad():  # the projector feature is the language model's image input
        ref = frozen.model.get_image_features(
            **({"pixel_values": batch["pixel_values"]} if arch == "llava" else
               {"pixel_values": batch["pixel_values"], "image_grid_thw": batch["image_grid_thw"]}),
            **({"vision_feature_layer": -2, "vision_feature_select_strategy": "default"}
               if arch == "llava" else {}))
    torch.testing.assert_close(torch.cat(list(ref.pooler_output)), teacher.values[-1])


def test_loss_is_the_weighted_sum_of_the_terms_by_hand():
    model, processor, objective = _prepared(forget_weight=0.5, retain_weight=2.0,
                                            output_weight=0.25, feature_weights=[3.0, 1.0])
    frozen = copy.deepcopy(model)
    batch = _batch(objective, processor, "llava")
    _nudge(model)
    out = summed(objective.terms(model, batch))
    forget, retain = batch["forget"], batch["retain"]

    def distance(student_batch, teacher_batch):
        return feature_distance(objective.features(model, student_batch),
                                objective.features(frozen, teacher_batch), "mse", [3.0, 1.0])

    d_f = distance(forget["student"], forget["teacher"])  # teacher on the perturbed image
    d_r = distance(retain, retain)
    with torch.no_grad():
        mask = kl_mask(forget["student"], "answer")
        kl = forward_kl(selected(logits_of(frozen, forget["teacher"]), mask),
                        selected(logits_of(model, forget["student"]), mask)).mean()
    torch.testing.assert_close(out.parts["forget_feat"], d_f.detach())
    torch.testing.assert_close(out.parts["retain_feat"], d_r.detach())
    torch.testing.assert_close(out.parts["forget_kl"], kl)
    torch.testing.assert_close(out.loss, 0.5 * d_f + 2.0 * d_r + 0.25 * kl)
    assert d_f > 0 and d_r > 0 and kl > 0
    # the teacher view is the image only: same prompt tokens, perturbed pixels
    assert torch.equal(forget["student"]["input_ids"], forget["teacher"]["input_ids"])
    assert not torch.equal(forget["student"]["pixel_values"], forget["teacher"]["pixel_values"])


def test_ga_output_term_is_minus_the_forget_nll():
    model, processor, objective = _prepared(output_term="ga", output_weight=1.0,
                                            forget_weight=0.0, retain_weight=0.0)
    batch = _batch(objective, processor, "llava")
    out = summed(objective.terms(model, batch))
    expected = nll(model, batch["forget"]["student"])
    torch.testing.assert_close(out.loss, -expected)
    assert set(out.parts) == {"forget_nll"}
    torch.testing.assert_close(out.parts["forget_nll"], expected.detach())


def test_teacher_features_are_cached_once_per_distinct_fixed_image(monkeypatch):
    model, processor, objective = _prepared()
    batch = _batch(objective, processor, "llava", n=3, retain_colours=2)  # 6 items, 2 images
    runs = []
    real = objective.features
    monkeypatch.setattr(objective, "features",
                        lambda m, b, params=None: runs.append(params is not None) or
                        real(m, b, params))
    retain = batch["retain"]
    assert len(set(image_keys(retain))) == 2
    first = objective.teacher_features(model, retain, cache=True)
    assert runs == [True] and len(objective.cache) == 2
    _nudge(model)  # the teacher does not move with the student
    again = objective.teacher_features(model, retain, cache=True)
    assert runs == [True]  # served from the cache
    fresh = objective.teacher_features(model, retain, cache=False)
    for a, b, c in zip(first.values, again.values, fresh.values, strict=True):
        assert torch.equal(a, b)
        torch.testing.assert_close(a, c)
    assert all(t.device.type == "cpu" and t._base is None
               for image in objective.cache.values() for t in image)  # copies, not views


def test_forget_targets_are_cached_only_under_a_deterministic_perturbation():
    noise = VKD(perturbation=NOISE)
    assert noise.cache_teacher and not noise.cache_forget  # fresh noise every step
    white = VKD(perturbation=WHITE)
    assert white.cache_forget
    assert not VKD(perturbation=WHITE, cache_teacher=False).cache_forget
    model, processor, objective = _prepared(perturbation=WHITE)
    batch = _batch(objective, processor, "llava", n=3)
    list(objective.terms(model, batch))
    # 3 white forget images (one key: same pixels) + 6 distinct retain portraits
    assert len(objective.cache) == 1 + 6


def test_layers_resolve_against_the_layers_the_projector_reads():
    llava, _, objective = _prepared()  # small tiny LLaVA: 3 CLIP layers, the projector reads 2
    assert objective.feature_layers == [1]
    assert VKD(layers=[0, -1], perturbation=NOISE).resolve_layers(llava) == [0, 1]
    assert VKD(layers=[-2], perturbation=NOISE).resolve_layers(llava) == [0]
    with pytest.raises(ScopeError, match=r"has 2: the projector reads vision layers 0..1 of 3"):
        VKD(layers=[2], perturbation=NOISE).resolve_layers(llava)
    with pytest.raises(ScopeError, match="names a layer twice"):
        VKD(layers=[1, -1], perturbation=NOISE).resolve_layers(llava)
    qwen, _ = build_tiny("qwen2_vl", size="small")  # every block reaches the merger
    assert VKD(layers=[-1, 0], perturbation=NOISE).resolve_layers(qwen) == [2, 0]


def test_a_scope_that_trains_no_visual_feature_is_refused():
    for scope in ("language", "lora"):
        model, _ = build_tiny("llava", size="small")
        if scope == "lora":
            from unlearn.models.lora import prepare_trainable
            model, _ = prepare_trainable(model, OmegaConf.create(
                {"scope": "lora", "lora": {"r": 2, "alpha": 2, "dropout": 0.0,
                                           "init": "gaussian", "target_modules": ["q_proj"]}}))
        else:
            select_trainable(model, scope)
        with pytest.raises(ScopeError, match="no chosen feature depends on a trainable"):
            VKD(perturbation=NOISE).prepare(model, {}, None)
    model, _ = build_tiny("llava", size="small")
    select_trainable(model, "projector")  # the tower's features cannot move, the projector's can
    info = VKD(perturbation=NOISE).prepare(model, {}, None)["vkd"]
    assert info["features_with_gradient"] == ["projector"]
    with pytest.raises(ScopeError):
        VKD(projector=False, perturbation=NOISE).prepare(model, {}, None)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"distance": "l1"}, r"method.objective.distance='l1' is not one of \['mse', 'cosine'\]"),
    ({"output_term": "npo"}, r"output_term='npo' is not one of \['kl', 'ga'\]"),
    ({"mask_terms": "retain"}, r"mask_terms='retain' is not one of \['forget', 'all'\]"),
    ({"feature_weights": [1.0]}, r"must hold 2 non-negative numbers"),
    ({"feature_weights": [0.0, 0.0]}, r"not all zero"),
    ({"layers": [], "projector": False}, r"at least one feature"),
    ({"forget_weight": 0.0, "retain_weight": 0.0}, r"not all 0"),
    ({"retain_weight": -1.0}, r"must be >= 0"),
    ({"perturbation": {"name": "none"}}, r"the teacher view equals the student's input"),
])
def test_bad_values_fail_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VKD(**{"perturbation": NOISE, **kwargs})


# --------------------------------------------------------------------------- config
def test_config_defaults_the_scope_to_the_visual_side():
    cfg = make(["method=vkd"])
    validate(cfg)
    assert cfg.trainable_modules.scope == "vision" and cfg.method.name == "vkd"
    # after the model group: a real model's LoRA default does not win over the method's
    assert make(["method=vkd", "model=llava7b"]).trainable_modules.scope == "vision"
    assert make(["method=vkd", "trainable_modules=all"]).trainable_modules.scope == "all"
    assert make(["method=ga"]).trainable_modules.scope == "all"
    objective = build_objective(make(["method=vkd", "perturbation=white", "seed=3"]))
    assert objective.cache_forget and objective.views["forget"].instruction == ""
    with pytest.raises(ConfigError, match=r"method.objective.distance='l2' is not one of"):
        validate(make(["method=vkd", "method.objective.distance=l2"]))
    with pytest.raises(ConfigError, match=r"method='vkd': the teacher view equals"):
        build_objective(make(["method=vkd", "perturbation=none"]))


def test_the_teacher_image_is_seeded_as_vgids():
    """VKD's and Vgid's teacher images are the same draws for the same perturbation and seed."""
    vkd = build_objective(make(["method=vkd", "seed=5"])).views["forget"].image_transform
    vgid = build_objective(make(["method=vgid", "seed=5"])).views["forget"].image_transform
    image = Image.new("RGB", (64, 64), (10, 20, 30))
    for _ in range(2):
        assert vkd(image).tobytes() == vgid(image).tobytes()


# --------------------------------------------------------------------------- training
def _stage(lr: float = 1e-3):
    return OmegaConf.create({"epochs": 1, "batch_size": 2, "loss_scope": "answer",
                             "optim": {"lr": lr, "schedule": "constant"}})


def _train_sets(objective: VKD, tiny_bench_dir, n_forget: int = 6, n_retain: int = 6):
    bench = MLLMUBench(str(tiny_bench_dir), forget_ratio=10, seed=0)
    full = {"forget": bench.forget_train(), "retain": bench.retain_train()}
    train = {"forget": objective.select("forget", full["forget"])[:n_forget],
             "retain": objective.select("retain", full["retain"])[:n_retain]}
    return bench, full, train


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_training_moves_the_visual_side_only(tiny_bench_dir):
    """A short run on the tiny LLaVA: every language-model parameter is bit-identical, every
    trainable visual tensor moved, and the forget features moved towards the target."""
    model, processor = tiny_model()
    select_trainable(model, "vision")
    objective = VKD(perturbation=WHITE)  # a fixed target, so before/after compare exactly
    _, full, train = _train_sets(objective, tiny_bench_dir)
    assert all(s.modality == "image_text" for part in train.values() for s in part)
    assert any(s.modality == "text_only" for s in full["forget"])  # select() dropped them
    objective.prepare(model, full, None)
    before = _snapshot(model)
    pair = PairCollator(processor, "llava", objective.views["forget"])
    forget = pair(train["forget"][:4])

    def forget_distance():
        with torch.no_grad():
            return feature_distance(objective.features(model, forget["student"]),
                                    objective.teacher_features(model, forget["teacher"], True),
                                    "mse", [1.0, 1.0]).item()

    start = forget_distance()
    fit(model, processor, "llava", objective, train, _stage(), TRAINER, seed=0)
    groups = module_groups(model)
    moved = 0
    for name, p in model.named_parameters():
        same = torch.equal(p.detach(), before[name])
        if group_of(name, groups) == "language":
            assert same, name
        elif p.requires_grad:
            assert not same, name
            moved += 1
    assert moved == len(trainable(model)) > 10
    assert forget_distance() < 0.5 * start


def _masked_run(tiny_bench_dir, tmp_path, mask_terms: str, retain_weight: float,
                output_weight: float = 0.0):
    model, processor = tiny_model()
    select_trainable(model, "vision")
    objective = VKD(perturbation=NOISE, saliency=True, mask_terms=mask_terms,
                    retain_weight=retain_weight, output_weight=output_weight)
    bench, full, train = _train_sets(objective, tiny_bench_dir)
    cfg = OmegaConf.create({"model": {"family": "llava"}, "seed": 0,
                            "method": {"loss_scope": "answer", "batch_size": 4},
                            "paths": {"cache_dir": str(tmp_path / "cache")},
                            "trainable_modules": {"scope": "vision"}})
    setup = objective_setup(cfg, bench, processor, {"fingerprint": "tiny"}, tmp_path)
    entry = objective.prepare(model, full, setup)
    before = _snapshot(model)
    fit(model, processor, "llava", objective, train, _stage(), TRAINER, seed=0)
    return model, processor, objective, before, entry, setup, full


@pytest.mark.parametrize(("mask_terms", "retain_weight", "output_weight"),
                         [("all", 1.0, 0.0), ("forget", 0.0, 0.0), ("forget", 0.0, 1.0)])
def test_masked_parameters_do_not_move(tiny_bench_dir, tmp_path, mask_terms, retain_weight,
                                       output_weight):
    """Every masked term (feature terms and the output term) leaves m = 0 bit-identical."""
    model, _, objective, before, entry, _, _ = _masked_run(
        tiny_bench_dir, tmp_path, mask_terms, retain_weight, output_weight)
    assert entry["mask"]["terms"] == mask_terms and set(entry["mask"]["by_group"]) == \
        {"vision", "projector"}
    kept = changed = selected = 0
    for name, p in trainable(model).items():
        m = objective.masks[name]
        diff = p.detach() != before[name]
        assert not diff[~m].any(), name  # mask 0: bit-identical
        kept += int((~m).sum())
        changed, selected = changed + int(diff[m].sum()), selected + int(m.sum())
    assert kept > 0 and selected > 0 and changed / selected > 0.5


def test_forget_masking_leaves_the_retain_gradient_whole(tiny_bench_dir, tmp_path):
    """``mask_terms: forget`` (MMUnlearner eq. 3): g = m ⊙ ∇L_f + ∇L_r, and the mask is
    MMUnlearner's cached file for the same scope."""
    model, processor, objective, _, entry, setup, full = _masked_run(
        tiny_bench_dir, tmp_path, "forget", 1.0)
    shared = MMUnlearner().prepare(model, full, setup)["mask"]
    assert shared["cached"] and shared["key"] == entry["mask"]["key"]
    batch = _batch(objective, processor, "llava")
    _nudge(model, 0.01)  # off the teacher, so the retain term has a gradient

    def grads(term_names):
        model.zero_grad()
        outs = [t for t in objective.terms(model, batch) if set(t.parts) & term_names]
        sum(t.loss for t in outs).backward()
        return {n: p.grad.clone() for n, p in trainable(model).items()}

    both = grads({"forget_feat", "retain_feat"})
    objective.saliency = False
    g_forget, g_retain = grads({"forget_feat"}), grads({"retain_feat"})
    reached = 0
    for name, m in objective.masks.items():
        torch.testing.assert_close(both[name], m * g_forget[name] + g_retain[name])
        reached += int((both[name][~m] != 0).sum())
    assert reached > 0


def test_pipeline_leaves_every_text_only_score_as_it_was(tmp_path):
    """``python -m unlearn method=vkd`` end to end (tiny world): the method's own scope (the
    LLM never trains), the manifest entry, the logged terms, and text-only results identical."""
    import json

    from unlearn.pipeline import run

    from .test_pipeline import compose_cfg

    run(compose_cfg(tmp_path, ["method=vkd", "method.optim.lr=1e-3"]), tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["parameters"]["by_group"]["language"]["trainable"] == 0
    assert manifest["parameters"]["by_group"]["projector"]["frozen"] == 0
    assert manifest["vkd"]["layers"] == [0]  # tiny: 2 CLIP layers, the projector reads 1
    assert manifest["vkd"]["features_with_gradient"] == ["layer 0", "projector"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    for split, base in metrics["base"].items():
        assert metrics["unlearned"][split]["text_only"] == base["text_only"], split
    assert metrics["unlearned"]["forget"]["image_text"] != metrics["base"]["forget"]["image_text"]
    header = (tmp_path / "run" / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "train/forget_feat" in header and "train/retain_feat" in header


def test_a_batch_that_reaches_no_trainable_weight_makes_no_step(tiny_bench_dir):
    """Text-only items under the visual scope (a relearning attack after VKD): no backward,
    no error, nothing moves (the optimizer steps over parameters without gradients)."""
    from omegaconf import OmegaConf

    from unlearn.data.mllmu import MLLMUBench
    from unlearn.methods.gradient import FineTune
    from unlearn.models.modules import select_trainable
    from unlearn.train import fit

    from .test_divergence import TRAINER, tiny_model

    bench = MLLMUBench(str(tiny_bench_dir), forget_ratio=10, seed=0)
    text_only = [s for s in bench.forget_train() if s.modality == "text_only"][:4]
    model, processor = tiny_model()
    select_trainable(model, "vision")
    before = [p.detach().clone() for p in model.parameters()]
    stage = OmegaConf.create({"epochs": 1, "batch_size": 2, "loss_scope": "answer",
                              "optim": {"lr": 1e-2, "schedule": "constant"}})
    trainer = fit(model, processor, "llava", FineTune(), {"train": text_only}, stage, TRAINER,
                  seed=0)
    assert trainer.global_step == 2 and len(text_only) == 4  # both batches ran
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
