"""MMUnlearner: Fisher values and masks by hand, the masked update rule, the mask cache."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import RandomSampler

from unlearn.data.collate import Collator
from unlearn.data.datamodule import UnlearnDataModule
from unlearn.data.mllmu import MLLMUBench
from unlearn.data.schema import Sample
from unlearn.methods import mask_cache, mmunlearner
from unlearn.methods.losses import logits_of, reduce_nll, token_logprobs
from unlearn.methods.mask_report import density, module_type, plot_density
from unlearn.methods.mmunlearner import MMUnlearner
from unlearn.methods.saliency import check_aligned, fisher_diag, float32, ratio_mask, trainable
from unlearn.models import build_tiny, load_model_and_processor, module_groups, select_trainable
from unlearn.pipeline import objective_setup, run
from unlearn.train import fit

from .conftest import CONF
from .test_mllmu_loader import write_real_copy
from .test_pipeline import compose_cfg


class Toy(torch.nn.Module):
    """Two-token vocabulary; at position 0, logit(1) = features · w and logit(0) = 0.

    At w = 0 with every label 1, the token-mean NLL gradient is -0.5 · mean(features), so a
    batch whose rows all carry x contributes (0.5 x)² to the Fisher. ``unused`` never enters
    the graph (zero gradient); ``frozen`` does not train.
    """

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(4))
        self.unused = torch.nn.Parameter(torch.zeros(2))
        self.frozen = torch.nn.Parameter(torch.zeros(3), requires_grad=False)

    def forward(self, input_ids, features):
        logit = features @ self.w + self.frozen.sum()
        zeros = torch.zeros_like(logit)
        first = torch.stack([zeros, logit], -1)
        return SimpleNamespace(logits=torch.stack([first, torch.zeros_like(first)], 1))


def toy_batch(*rows: list[float]) -> dict[str, torch.Tensor]:
    n = len(rows)
    return {"input_ids": torch.zeros(n, 2, dtype=torch.long),
            "features": torch.tensor(rows, dtype=torch.float32),
            "labels": torch.tensor([[-100, 1]] * n)}


def test_fisher_is_the_mean_squared_batch_gradient():
    toy = Toy()
    # batch 1: grad of w = -0.5 * [2, 1, 1, 0]; batch 2: rows cancel -> zero gradient
    batches = [toy_batch([2, 1, 1, 0], [2, 1, 1, 0]), toy_batch([1, 1, 1, 0], [-1, -1, -1, 0])]
    s = fisher_diag(toy, batches)
    assert set(s) == {"w", "unused"}  # trainable only
    assert torch.equal(s["w"], torch.tensor([0.5, 0.125, 0.125, 0.0]))  # (0.5 x)^2 / 2 batches
    assert torch.equal(s["unused"], torch.zeros(2)) and s["w"].dtype == torch.float32
    assert toy.training  # mode restored


def test_mask_by_hand_with_ties_and_zero_gradients():
    toy = Toy()
    s_t = fisher_diag(toy, [toy_batch([2, 1, 1, 0])])   # [1, .25, .25, 0]
    s_p = fisher_diag(toy, [toy_batch([1, 1, 2, 0])])   # [.25, .25, 1, 0]
    assert torch.equal(s_t["w"], torch.tensor([1.0, 0.25, 0.25, 0.0]))
    assert torch.equal(s_p["w"], torch.tensor([0.25, 0.25, 1.0, 0.0]))
    m = ratio_mask(s_t, s_p, beta=1.0, eps=1e-15)
    # ratio 4 -> 1; tie at β -> 1; 0.25 -> 0; zero gradient: ε/ε = 1 = β -> 1
    assert m["w"].tolist() == [True, True, False, True]
    assert m["unused"].tolist() == [True, True] and m["w"].dtype == torch.bool
    # ε = 0: zero gradients give 0/0 = NaN -> not selected
    assert ratio_mask(s_t, s_p, beta=1.0, eps=0.0)["w"].tolist() == [True, True, False, False]
    assert ratio_mask(s_t, s_p, beta=4.0)["w"].tolist() == [True, False, False, False]
    assert ratio_mask(s_t, s_p, beta=0.25)["w"].tolist() == [True, True, True, True]
    with pytest.raises(ValueError, match="beta > 0"):
        ratio_mask(s_t, s_p, beta=0.0)


def test_fp32_accumulation_where_fp16_underflows():
    toy = Toy().half()
    # grad 0.5 * 1e-4 -> squared 2.5e-9: 0 in fp16, kept in fp32
    s = fisher_diag(toy, [toy_batch([1e-4, 0, 0, 0])])
    assert s["w"][0] == pytest.approx(2.5e-9, rel=1e-3)
    assert toy.w.dtype == torch.float16  # dtype restored
    with float32(toy):
        assert toy.w.dtype == torch.float32


def test_alignment_is_checked_by_name_and_shape():
    toy = Toy()
    params = trainable(toy)
    masks = {"w": torch.ones(4, dtype=torch.bool), "unused": torch.ones(2, dtype=torch.bool)}
    check_aligned(masks, params)
    with pytest.raises(ValueError, match="1 trainable without mask"):
        check_aligned({"w": masks["w"]}, params)
    with pytest.raises(ValueError, match="1 masked but not trainable"):
        check_aligned({**masks, "frozen": torch.ones(3, dtype=torch.bool)}, params)
    with pytest.raises(ValueError, match="1 shape mismatches"):
        check_aligned({**masks, "w": torch.ones(5, dtype=torch.bool)}, params)


# ---- the update rule on a real tiny LLaVA (tied embeddings)

def _samples(n: int, modality: str = "image_text", split: str = "forget") -> list[Sample]:
    out = []
    for i in range(n):
        image = Image.new("RGB", (64, 64), (30 * i % 255, 90, 200 - 20 * i % 200))
        out.append(Sample(profile_id=f"p{i % 3}", question=f"What is the hobby of person {i}?",
                          answer=f"chess number {i}", task="generation", modality=modality,
                          split=split, image=image if modality == "image_text" else None))
    return out


@pytest.fixture(scope="module")
def llava():
    model, processor = build_tiny("llava", size="small")
    return model, processor, Collator(processor, "llava", with_answer=True)


def _random_masks(model: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=gen) < 0.5 for n, p in trainable(model).items()}


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in trainable(model).items()}


def test_masked_forget_step_leaves_mask_zero_bit_identical(llava):
    model, _, collate = llava
    select_trainable(model, "all")
    model.train()
    objective = MMUnlearner()
    objective.masks = _random_masks(model)
    forget = collate(_samples(3))
    before = {n: p.detach().clone() for n, p in trainable(model).items()}

    model.zero_grad()
    (-objective.forget_loss(model, forget)).backward()
    masked = _grads(model)
    model.zero_grad()
    # the same full-logit path as forget_loss, so "exactly" can be bit-exact
    logp, mask = token_logprobs(logits_of(model, forget), forget["labels"])
    (-reduce_nll(logp, mask, "token_mean")).backward()
    full = _grads(model)
    for n, m in objective.masks.items():
        assert torch.equal(masked[n], full[n] * m), n  # exactly m ⊙ ∇(-L_f)

    for n, p in trainable(model).items():
        p.grad = masked[n]
    lr = 0.5
    torch.optim.SGD(model.parameters(), lr=lr).step()
    moved = reached = 0
    for n, p in trainable(model).items():
        m, changed = objective.masks[n], p.detach() != before[n]
        assert not changed[~m].any(), n  # mask 0: bit-identical
        torch.testing.assert_close(p.detach(), before[n] - lr * masked[n])
        # mask 1 with a gradient moved (unless lr·g is below the weight's float spacing)
        has_grad = m & (full[n] != 0)
        moved, reached = moved + int(changed[has_grad].sum()), reached + int(has_grad.sum())
    assert reached > 0 and moved / reached > 0.99
    with torch.no_grad():
        for n, p in trainable(model).items():
            p.copy_(before[n])


def test_fused_step_masks_forget_but_not_retain(llava):
    model, _, collate = llava
    select_trainable(model, "all")
    objective = MMUnlearner(retain_weight=1.0)
    objective.masks = _random_masks(model, seed=1)
    batch = {"forget": collate(_samples(2)), "retain": collate(_samples(2, split="retain"))}
    model.zero_grad()
    out = objective(model, batch)
    out.loss.backward()
    fused = _grads(model)
    model.zero_grad()
    (-mmunlearner.nll(model, batch["forget"])).backward()
    g_forget = _grads(model)
    model.zero_grad()
    mmunlearner.nll(model, batch["retain"]).backward()
    g_retain = _grads(model)
    model.zero_grad()
    reached = 0
    for n, m in objective.masks.items():
        torch.testing.assert_close(fused[n], m * g_forget[n] + g_retain[n], rtol=1e-5, atol=1e-7)
        # where m = 0 the gradient is the retain gradient alone: it reaches masked parameters
        torch.testing.assert_close(fused[n][~m], g_retain[n][~m], rtol=1e-5, atol=1e-8)
        reached += int((fused[n][~m] != 0).sum())
    assert reached > 0
    assert {"forget_nll", "retain_nll"} == set(out.parts)


def test_misaligned_mask_fails_loudly(llava):
    model, _, collate = llava
    select_trainable(model, "all")
    objective = MMUnlearner()
    objective.masks = _random_masks(model)
    select_trainable(model, "vision")
    with pytest.raises(ValueError, match="does not match the trainable parameters"):
        objective.forget_loss(model, collate(_samples(1)))
    select_trainable(model, "all")
    with pytest.raises(RuntimeError, match="prepare"):
        MMUnlearner().forget_loss(model, collate(_samples(1)))


# ---- cache, density, plot

def test_pack_unpack_round_trip_at_one_bit():
    gen = torch.Generator().manual_seed(0)
    masks = {"a": torch.rand(3, 5, generator=gen) < 0.3, "b": torch.rand(7, generator=gen) < 0.9,
             "c": torch.zeros(2, 2, 2, dtype=torch.bool)}
    bits = mask_cache.pack(masks)
    assert bits.dtype == np.uint8 and bits.size == -(-29 // 8)
    back = mask_cache.unpack(bits, {n: list(m.shape) for n, m in masks.items()})
    assert all(torch.equal(back[n], masks[n]) for n in masks)


def _cfg(tmp_path, scope="all"):
    return OmegaConf.create({
        "model": {"family": "llava"}, "method": {"loss_scope": "answer", "batch_size": 4},
        "seed": 0, "paths": {"cache_dir": str(tmp_path / "cache")},
        "trainable_modules": {"scope": scope}})


def small(**kwargs) -> MMUnlearner:
    """P's text-only parts from the few training items of :func:`_sets` (not Full_Set's)."""
    return MMUnlearner(preserve_text="train", **kwargs)


def _sets(bench: MLLMUBench) -> dict[str, list[Sample]]:
    """A few of each part, to keep the Fisher pass short."""
    def few(samples, k=6):
        return ([s for s in samples if s.modality == "image_text"][:k]
                + [s for s in samples if s.modality == "text_only"][:k])
    return {"forget": few(bench.forget_train()), "retain": few(bench.retain_train())}


def test_mask_cache_reuse_and_keys(llava, tiny_bench_dir, tmp_path, monkeypatch):
    model, processor, _ = llava
    select_trainable(model, "vision")
    calls = []
    real = mmunlearner.fisher_diag
    monkeypatch.setattr(mmunlearner, "fisher_diag",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    bench = MLLMUBench(str(tiny_bench_dir), forget_ratio=10)
    prov = {"fingerprint": "vanilla-x"}

    def prepare(objective, bench, run):
        setup = objective_setup(_cfg(tmp_path, "vision"), bench, processor, prov, tmp_path / run)
        return objective.prepare(model, _sets(bench), setup)["mask"]

    first = prepare(small(), bench, "r1")
    assert not first["cached"] and len(calls) == 2  # S_T and S_P
    assert first["sets"]["target"] == 6 and first["sets"]["retain_text_only"] == 6
    n_vision = sum(p.numel() for p in trainable(model).values())
    assert first["total"] == n_vision and first["bytes_per_param"] <= 0.125 + 0.01
    assert (tmp_path / "r1" / "mask_density.png").stat().st_size > 0
    assert set(first["by_group"]) == {"vision", "projector"}

    objective = small()
    second = prepare(objective, bench, "r2")
    assert second["cached"] and len(calls) == 2 and second["path"] == first["path"]
    assert second["by_type"] == first["by_type"]
    check_aligned(objective.masks, trainable(model))

    beta = prepare(small(beta=2.0), bench, "r3")
    assert not beta["cached"] and len(calls) == 4 and beta["path"] != first["path"]
    assert beta["selected"] <= first["selected"]
    ratio = prepare(small(), MLLMUBench(str(tiny_bench_dir), forget_ratio=5), "r4")
    assert not ratio["cached"] and len(calls) == 6
    assert len({first["path"], beta["path"], ratio["path"]}) == 3

    index = json.loads((tmp_path / "cache" / "masks" / first["key"] / "index.json").read_text())
    assert index["numel"] == n_vision and index["meta"]["scope"] == "vision"
    assert not (tmp_path / "cache" / "masks" / first["key"] / "fisher.pt").exists()
    with_fisher = prepare(small(save_fisher=True), bench, "r5")
    assert not with_fisher["cached"] and with_fisher["path"] == first["path"]
    saved = torch.load(tmp_path / "cache" / "masks" / first["key"] / "fisher.pt")
    assert set(saved) == {"target", "preserve"}
    select_trainable(model, "all")


def test_preserve_set_has_the_forget_peoples_text_questions_on_the_real_schema(
        llava, tmp_path, monkeypatch, caplog):
    """The real ft_Data has no text-only item: P's text-only parts come from Full_Set's
    pure-text questions (question -> correct option text, no image), as the official code."""
    model, processor, _ = llava
    select_trainable(model, "all")
    bench = MLLMUBench(str(write_real_copy(tmp_path / "MLLMU-Bench")), forget_ratio=5,
                       cache_dir=str(tmp_path / "hf"))
    seen = []
    real = mmunlearner.saliency_sets
    monkeypatch.setattr(mmunlearner, "saliency_sets",
                        lambda *a, **k: seen.append(real(*a, **k)) or seen[-1])
    sets = {"forget": bench.forget_train(), "retain": bench.retain_train()}

    def prepare(objective, run):
        setup = objective_setup(_cfg(tmp_path), bench, processor, {"fingerprint": "v"},
                                tmp_path / run)
        return objective.prepare(model, sets, setup)["mask"]

    official = prepare(MMUnlearner(), "full_set")
    target, preserve = seen[-1]
    assert [(s.profile_id, s.question, s.answer) for s in target] == [
        ("11", "Who is this?", "This is Ann Bell."), ("11", "Born?", "1970")]
    assert [(s.profile_id, s.question, s.answer, s.modality, s.image)
            for s in preserve["forget_text_only"]] == [
        ("11", "Is Ann Bell a baker?", "y", "text_only", None),
        ("11", "Where does Ann Bell live?", "Ann Bell", "text_only", None)]
    assert [s.profile_id for s in preserve["retain_text_only"]] == ["12", "12", "13", "13"]
    assert [s.profile_id for s in preserve["retain_image_text"]] == ["12", "12", "13", "13"]
    assert official["preserve_text"] == "full_set" and official["sets"] == {
        "target": 2, "forget_text_only": 2, "retain_image_text": 4, "retain_text_only": 4}

    caplog.set_level("WARNING", logger="unlearn.methods.mmunlearner")
    ours = prepare(MMUnlearner(preserve_text="train"), "train")
    assert ours["preserve_text"] == "train" and ours["sets"] == {
        "target": 2, "forget_text_only": 0, "retain_image_text": 4, "retain_text_only": 0}
    assert "forget_text_only is empty (method.objective.preserve_text=train)" in caplog.text
    # another P: another cache entry and another mask
    assert not ours["cached"] and ours["key"] != official["key"]
    assert ours["selected"] != official["selected"]
    with pytest.raises(ValueError, match="'text' is not one of"):
        MMUnlearner(preserve_text="text")


def test_density_by_module_type_and_layer(tmp_path):
    groups = {"vision": ["model.vision_tower."], "projector": ["model.multi_modal_projector."],
              "language": ["model.language_model.", "lm_head."]}
    masks = {
        "model.vision_tower.encoder.layers.0.self_attn.q_proj.weight": torch.tensor([1, 0]),
        "model.vision_tower.encoder.layers.1.mlp.fc1.weight": torch.tensor([1, 1, 1, 0]),
        "model.multi_modal_projector.linear_1.weight": torch.tensor([0, 0, 1, 1]),
        "model.language_model.layers.0.mlp.up_proj.weight": torch.tensor([0, 0]),
        "model.language_model.layers.0.input_layernorm.weight": torch.tensor([1, 1]),
    }
    masks = {n: m.bool() for n, m in masks.items()}
    stats = density(masks, groups)
    assert (stats["selected"], stats["total"]) == (8, 14)
    assert stats["by_group"]["vision"]["fraction"] == pytest.approx(4 / 6)
    assert stats["by_type"]["projector"]["fraction"] == 0.5
    assert stats["by_type"]["language other"]["fraction"] == 1.0
    assert stats["by_layer"] == {"vision attention": {0: 0.5}, "vision mlp": {1: 0.75},
                                 "language mlp": {0: 0.0}}
    assert module_type("model.visual.blocks.3.attn.qkv.weight", "vision") == "vision attention"
    assert plot_density(stats, tmp_path / "d.png").stat().st_size > 0


def test_real_model_groups_cover_every_mask_entry(llava):
    model, _, _ = llava
    select_trainable(model, "all")
    stats = density(_random_masks(model), module_groups(model))
    assert {"vision attention", "vision mlp", "projector", "language attention",
            "language mlp"} <= set(stats["by_type"])
    assert "other" not in stats["by_group"]


def test_official_schedule_draws_each_forget_sample_once_in_the_official_order():
    """The official script: retain batches define the epoch; one pass over a shuffled forget
    loader, forget batch j at step j·k, k = len(retain_loader) // len(forget_loader)."""
    objective = MMUnlearner(schedule="official")
    forget, retain = [f"f{i}" for i in range(10)], [f"r{i}" for i in range(37)]
    data = UnlearnDataModule({"retain": retain, "forget": forget}, collate=list, batch_size=4,
                             seed=7, one_pass=objective.one_pass)
    # the official shuffled forget loader's batches: consecutive runs of its sampler's order
    # (RandomSampler, here with the forget split's seeded generator)
    order = [forget[i] for i in RandomSampler(forget, generator=torch.Generator().manual_seed(8))]
    official = [order[j:j + 4] for j in range(0, 10, 4)]
    epochs, loaders = [], data.loaders()  # one set of loaders for every epoch, as Lightning
    for _ in range(2):
        steps = list(zip(*loaders.values(), strict=True))
        assert len(steps) == 10  # ceil(37 / 4) retain batches
        assert [len(r) for r, _ in steps] == [4] * 9 + [1]
        epochs.append({i: f for i, (_, f) in enumerate(steps) if f})
    # k = 10 // 3 = 3: forget batches at steps 0, 3 and 6, then none
    assert sorted(epochs[0]) == [0, 3, 6]
    assert list(epochs[0].values()) == official
    seen = [x for b in epochs[0].values() for x in b]
    assert sorted(seen) == sorted(forget) and len(seen) == 10  # each exactly once
    assert official == [["f3", "f5", "f0", "f1"], ["f2", "f6", "f4", "f7"], ["f8", "f9"]]
    # the next epoch makes a new pass (the official script fails at a second epoch)
    again = [x for b in epochs[1].values() for x in b]
    assert sorted(epochs[1]) == [0, 3, 6] and sorted(again) == sorted(forget) and again != seen
    with pytest.raises(ValueError, match="one-pass split 'retain'"):
        UnlearnDataModule({"retain": retain, "forget": forget}, collate=list, batch_size=4,
                          one_pass=("retain",))


def test_official_schedule_trains_on_each_forget_batch_once(tmp_path):
    """Through Lightning: the masked forget steps see exactly the official pass's batches."""
    model, processor = load_model_and_processor(OmegaConf.create(
        {"family": "llava", "source": "tiny", "tiny": {"size": "tiny", "image_size": 64}}))
    select_trainable(model, "all")
    images = [Sample(profile_id=f"p{i}", question=f"Who is person {i}?", answer=f"Name {i}",
                     task="qa", modality="image_text", split="forget",
                     image=Image.new("RGB", (64, 64), (20 * i, 90, 40))) for i in range(6)]
    retain = [dataclasses.replace(s, profile_id=f"r{i}", split="retain", answer=f"Other {i}")
              for i, s in enumerate(images + images[:5])]
    seen = []

    class Recording(MMUnlearner):
        def forget_loss(self, model, batch):
            seen.append(batch["input_ids"].clone())
            return super().forget_loss(model, batch)

    objective = Recording(schedule="official")
    objective.masks = _random_masks(model)
    stage = OmegaConf.create({"epochs": 1, "batch_size": 2, "loss_scope": "answer",
                              "optim": {"lr": 1e-3, "schedule": "constant"}})
    fit(model, processor, "llava", objective, {"forget": images, "retain": retain}, stage,
        OmegaConf.load(f"{CONF}/trainer/cpu.yaml"), seed=3)
    # 11 retain items: 6 steps; 6 forget items: 3 batches at steps 0, 2, 4 (k = 6 // 3)
    order = torch.randperm(6, generator=torch.Generator().manual_seed(3 + 1)).tolist()
    collate = Collator(processor, "llava", loss_scope="answer")
    want = [collate([images[i] for i in order[j:j + 2]])["input_ids"] for j in (0, 2, 4)]
    assert len(seen) == 3 and all(torch.equal(a, b) for a, b in zip(seen, want, strict=True))


def test_official_schedule_refuses_ddp_before_any_process_starts():
    """Manual optimisation runs in one process: said before Lightning prepares the one-pass
    loader for DDP (which it could not)."""
    model, processor = load_model_and_processor(OmegaConf.create(
        {"family": "llava", "source": "tiny", "tiny": {"size": "tiny", "image_size": 64}}))
    objective = MMUnlearner(schedule="official")
    sets = {"forget": _samples(2), "retain": _samples(2, split="retain")}
    stage = OmegaConf.create({"epochs": 1, "batch_size": 2, "loss_scope": "answer",
                              "optim": {"lr": 1e-3, "schedule": "constant"}})
    with pytest.raises(NotImplementedError, match=r"method.schedule=official\) run in one "):
        fit(model, processor, "llava", objective, sets, stage,
            OmegaConf.load(f"{CONF}/trainer/ddp_cpu.yaml"), seed=0)


def test_bad_schedule_names_allowed_values():
    with pytest.raises(ValueError, match=r"method.schedule='alt' is not one of \['fused', "):
        MMUnlearner(schedule="alt")


@pytest.mark.slow
def test_pipeline_official_then_fused_reuses_the_mask(tmp_path):
    common = ["method=mmunlearner", "trainable_modules=vision", "method.optim.lr=1e-3"]
    run(compose_cfg(tmp_path, [*common, "method.schedule=official"]), tmp_path / "official")
    run(compose_cfg(tmp_path, common), tmp_path / "fused")
    first, second = (json.loads((tmp_path / d / "manifest.json").read_text())["mask"]
                     for d in ("official", "fused"))
    assert not first["cached"] and second["cached"] and first["path"] == second["path"]
    assert first["schedule"] == "official" and first["forget_every"] > 1
    assert first["forget_steps"] == first["forget_batches"]  # each forget batch once
    # 1 bit per parameter plus the name/shape index, which weighs more on a tiny model
    assert second["bytes_per_param"] <= 0.25
    assert set(first["by_group"]) == {"vision", "projector"}
    for d in ("official", "fused"):
        assert (tmp_path / d / "mask_density.png").stat().st_size > 0
        losses = (tmp_path / d / "logs" / "metrics.csv").read_text().splitlines()[0]
        assert "train/forget_nll" in losses and "train/retain_nll" in losses


# ---- which forget items train

def test_select_keeps_the_forget_image_text_items_only():
    forget = [*_samples(2, "text_only"), *_samples(3), *_samples(1, "text_only")]
    retain = [*_samples(2, split="retain"), *_samples(2, "text_only", split="retain")]
    for schedule in ("fused", "official"):
        objective = MMUnlearner(schedule=schedule)
        kept = objective.select("forget", forget)
        assert [id(s) for s in kept] == [id(s) for s in forget[2:5]]  # in the given order
        assert [id(s) for s in objective.select("retain", retain)] == [id(s) for s in retain]


class _Stop(Exception):
    """Raised by the stand-in for fit once it has seen the training sets."""


def test_pipeline_trains_the_forget_loss_on_image_text_items_only(tiny_bench_dir, tmp_path,
                                                                   monkeypatch):
    """The mask sees the whole forget set (its text-only part is in P), the forget loss then
    trains on its image+text items only; retain keeps both modalities."""
    import unlearn.pipeline as pipeline

    bench = MLLMUBench(str(tiny_bench_dir), forget_ratio=10, seed=0)
    model, processor = build_tiny("llava", "tiny")
    seen: dict = {}

    def prepare(self, model, sets, setup):
        seen["prepare"] = {name: list(s) for name, s in sets.items()}
        return {}

    def fit(model, processor, family, objective, train_sets, *args, **kwargs):
        seen["fit"] = train_sets
        raise _Stop

    monkeypatch.setattr(pipeline, "load_benchmark", lambda cfg: bench)
    monkeypatch.setattr(pipeline, "eval_splits", lambda cfg, bench: {})
    monkeypatch.setattr(pipeline, "vanilla_model",
                        lambda cfg, bench: (model, processor, {"fingerprint": "tiny"}))
    monkeypatch.setattr(MMUnlearner, "prepare", prepare)
    monkeypatch.setattr(pipeline, "fit", fit)
    with pytest.raises(_Stop):
        run(compose_cfg(tmp_path, ["method=mmunlearner"]), tmp_path / "run")

    def keys(samples):
        return [(s.profile_id, s.modality, s.task, s.question, s.answer) for s in samples]

    forget, retain = bench.forget_train(), bench.retain_train()
    image_text = [s for s in forget if s.modality == "image_text"]
    assert image_text and len(image_text) < len(forget)
    assert keys(seen["prepare"]["forget"]) == keys(forget)
    assert keys(seen["fit"]["forget"]) == keys(image_text)
    assert keys(seen["fit"]["retain"]) == keys(retain)
    assert {s.modality for s in seen["fit"]["retain"]} == {"image_text", "text_only"}
