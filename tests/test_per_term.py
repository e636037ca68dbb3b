"""Per-term backward (``method.backward_per_term``): the objective's loss is the sum of its
terms, each term is built only after the previous one was consumed, and training one term at
a time through the LightningModule gives the same weights as the summed loss."""

import copy
import math

import pytest
import torch
from omegaconf import OmegaConf

from unlearn.data.mllmu import MLLMUBench
from unlearn.methods.gradient import GradientDifference
from unlearn.methods.kl import KLMinimization
from unlearn.methods.preference import NegativePreferenceOptimization
from unlearn.models.modules import select_trainable
from unlearn.models.reference import build_reference
from unlearn.models.tiny import build_tiny
from unlearn.train import fit

from .test_baselines import K1, K2, K3, NLL_TOKEN_MEAN, reference_model
from .test_losses import FixedLogits, two_sequences


class CountingModel(FixedLogits):
    """FixedLogits that records how many forward passes it has made."""

    calls = 0

    def forward(self, *args, **kwargs):
        type(self).calls += 1
        return super().forward(*args, **kwargs)


def test_kl_min_terms_by_hand_and_built_lazily():
    logits, batch = two_sequences()
    model = CountingModel(logits)
    CountingModel.calls = 0
    terms = KLMinimization(beta=0.5).terms(model, {"forget": batch, "retain": batch},
                                           reference_model())
    forget = next(terms)
    assert CountingModel.calls == 1  # the retain forward has not happened yet
    assert forget.loss.item() == pytest.approx(-NLL_TOKEN_MEAN)
    assert set(forget.parts) == {"forget_nll"}
    retain = next(terms)
    assert CountingModel.calls == 2
    assert retain.loss.item() == pytest.approx(0.5 * (K1 + K2 + K3) / 3)
    assert next(terms, None) is None


@pytest.mark.parametrize("objective", [
    GradientDifference(retain_weight=2.0),
    KLMinimization(beta=0.5, retain_nll_weight=1.0),
    NegativePreferenceOptimization(beta=0.9, retain_weight=0.5),
])
def test_loss_is_the_sum_of_its_terms(objective):
    logits, batch = two_sequences()
    model, ref = FixedLogits(logits), reference_model()
    batches = {"forget": batch, "retain": batch}
    terms = list(objective.terms(model, batches, ref))
    whole = objective(model, batches, ref)
    assert len(terms) == 2
    assert whole.loss.item() == pytest.approx(sum(t.loss.item() for t in terms))
    assert whole.parts.keys() == {k for t in terms for k in t.parts}


@pytest.mark.parametrize("objective", [GradientDifference(), KLMinimization(beta=1.0)])
def test_per_term_training_equals_summed_loss(tiny_bench_dir, objective):
    """Two Lightning steps (AdamW, clipping) from the same weights on the same batches."""
    bench = MLLMUBench(str(tiny_bench_dir), forget_ratio=10, seed=0)
    splits = {"forget": bench.forget_train()[:4], "retain": bench.retain_train()[:4]}
    base, processor = build_tiny("llava", "tiny")
    trainer_cfg = OmegaConf.create({"accelerator": "cpu", "devices": 1,
                                    "gradient_clip_val": 0.05, "enable_progress_bar": False})
    weights = {}
    for per_term in (False, True):
        model = copy.deepcopy(base)
        select_trainable(model, "all")
        stage = OmegaConf.create({"epochs": 1, "batch_size": 2, "loss_scope": "answer",
                                  "backward_per_term": per_term,
                                  "optim": {"lr": 1e-3, "schedule": "constant"}})
        trainer = fit(model, processor, "llava", objective, splits, stage, trainer_cfg, seed=0,
                      reference=build_reference(model, objective.needs_reference))
        assert trainer.global_step == 2
        assert trainer.lightning_module.automatic_optimization is not per_term
        weights[per_term] = torch.cat([p.detach().flatten() for p in model.parameters()])
    moved = (weights[False] - torch.cat([p.flatten() for p in base.parameters()])).abs().max()
    assert moved > 1e-4
    torch.testing.assert_close(weights[True], weights[False], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("scope", ["all", "lora"])
def test_po_per_term_gradient_is_the_one_pass_gradient(tiny_bench_dir, scope):
    """PO's two terms (refusal graph, then the original answer's) give the gradient of the
    DPO loss as the released formula computes it, to the bit, also with LoRA dropout: the
    second forward replays the random state of the graph-free one."""
    import torch.nn.functional as F

    from unlearn.data.collate import Collator
    from unlearn.methods.preference import PreferenceOptimization
    from unlearn.models.lora import prepare_trainable

    bench = MLLMUBench(str(tiny_bench_dir), forget_ratio=10, seed=0)
    base, processor = build_tiny("llava", "tiny")
    objective = PreferenceOptimization(beta=0.5)
    sets = objective.train_sets(lambda name: getattr(bench, f"{name}_train")()[:3])
    batch = {name: Collator(processor, "llava")(samples) for name, samples in sets.items()}
    model, _ = prepare_trainable(copy.deepcopy(base), {
        "scope": scope, "lora": {"r": 4, "alpha": 8, "dropout": 0.3}})
    reference = build_reference(model, True)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # move the student away from the reference: margins not 0
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=gen))
    model.train()

    def released():  # the formula before the reference moved first and terms were split
        win, _ = objective.logp_ratio(model, reference, batch["forget_refusal"])
        lose, _ = objective.logp_ratio(model, reference, batch["forget"])
        loss = -objective.scale * F.logsigmoid(objective.beta * (win - lose)).mean()
        loss.backward()
        return loss.item()

    def one_pass():
        out = objective(model, batch, reference)
        out.loss.backward()
        return out.loss.item()

    def per_term():
        total = 0.0
        for term in objective.terms(model, batch, reference):
            term.loss.backward()  # frees this term's graph before the next is built
            total += term.loss.item()
        return total

    results = {}
    for name, run in {"released": released, "one_pass": one_pass, "per_term": per_term}.items():
        torch.manual_seed(1)
        model.zero_grad(set_to_none=True)
        loss = run()
        results[name] = (loss, torch.rand(1).item(),
                         torch.cat([p.grad.flatten() for p in model.parameters()
                                    if p.requires_grad]))
    loss, after, grad = results["released"]
    assert grad.abs().max() > 1e-3 and abs(loss - math.log(2)) > 1e-3
    for name in ("one_pass", "per_term"):
        assert results[name][0] == pytest.approx(loss, rel=1e-6)
        assert results[name][1] == after  # the random state moves as in one pass
        torch.testing.assert_close(results[name][2], grad, atol=1e-7, rtol=1e-6)
