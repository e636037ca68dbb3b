"""Per-term backward (``method.backward_per_term``): each term's value by hand (the retain
terms on a batch of their own), each term is built only after the previous one was consumed,
and training one term at a time through the LightningModule gives the same weights as the
summed loss."""

import copy
import math

import pytest
import torch
from omegaconf import OmegaConf

from unlearn.data.mllmu import MLLMUBench
from unlearn.methods.gradient import GradientDifference
from unlearn.methods.kl import KLMinimization
from unlearn.methods.losses import IGNORE
from unlearn.methods.preference import NegativePreferenceOptimization, PreferenceOptimization
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


def retain_batch(forget: dict) -> dict:
    """The forget inputs with other labels, so a retain term read off the forget batch shows.

    Student (``two_sequences``) log-probs of these labels: row 0 label 1 at position 0 is
    1/2; row 1 label 0 at position 0 is 1/2, at position 1 is 1/5 (logits 0, log 4)."""
    return dict(forget, labels=torch.tensor([[IGNORE, 1, IGNORE], [IGNORE, 0, 0]]))


L = math.log
# sequence_sum NLL per row, then the batch mean (the NPO / PO default reduction)
RETAIN_SEQ_NLL = (-L(1 / 2) + -(L(1 / 2) + L(1 / 5))) / 2
RETAIN_TOKEN_NLL = -(L(1 / 2) + L(1 / 2) + L(1 / 5)) / 3


def logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_npo_terms_by_hand():
    logits, forget = two_sequences()
    model, ref = FixedLogits(logits), reference_model()
    batches = {"forget": forget, "retain": retain_batch(forget)}
    beta, weight = 0.9, 0.5
    # log P(y|x) per forget row: student (two_sequences) and reference (reference_model)
    student = [L(1 / 2) + L(1 / 4), L(4 / 5)]
    ref_logp = [L(3 / 4) + L(1 / 2), L(1 / 2)]
    ratio = [s - r for s, r in zip(student, ref_logp, strict=True)]
    forget_loss = -(2 / beta) * (logsigmoid(-beta * ratio[0]) + logsigmoid(-beta * ratio[1])) / 2
    objective = NegativePreferenceOptimization(beta=beta, retain_weight=weight)
    forget_term, retain_term = objective.terms(model, batches, ref)
    assert forget_term.loss.item() == pytest.approx(forget_loss)
    assert forget_term.parts["logp_ratio"].item() == pytest.approx(sum(ratio) / 2)
    assert retain_term.loss.item() == pytest.approx(weight * RETAIN_SEQ_NLL)
    assert set(retain_term.parts) == {"retain_nll"}
    assert retain_term.parts["retain_nll"].item() == pytest.approx(RETAIN_SEQ_NLL)
    whole = objective(model, batches, ref)
    assert whole.loss.item() == pytest.approx(forget_loss + weight * RETAIN_SEQ_NLL)
    token_mean = NegativePreferenceOptimization(beta=beta, retain_weight=weight,
                                                reduction="token_mean")
    *_, retain_term = token_mean.terms(model, batches, ref)
    assert retain_term.loss.item() == pytest.approx(weight * RETAIN_TOKEN_NLL)


def test_po_terms_by_hand():
    logits, forget = two_sequences()
    model, ref = FixedLogits(logits), reference_model()
    refusal = dict(forget, labels=torch.tensor([[IGNORE, 1, 0], [IGNORE, IGNORE, 0]]))
    batches = {"forget": forget, "forget_refusal": refusal, "retain": retain_batch(forget)}
    beta, weight = 0.1, 2.0
    # log P(refusal) - log P_ref(refusal) and the same for the original answer, per row
    win = [L(1 / 2) + L(3 / 4) - (L(1 / 4) + L(1 / 2)), L(1 / 5) - L(1 / 2)]
    lose = [L(1 / 2) + L(1 / 4) - (L(3 / 4) + L(1 / 2)), L(4 / 5) - L(1 / 2)]
    dpo = -(logsigmoid(beta * (win[0] - lose[0])) + logsigmoid(beta * (win[1] - lose[1]))) / 2
    objective = PreferenceOptimization(beta=beta, retain_weight=weight)
    assert objective.splits == ("forget", "forget_refusal", "retain")
    dpo_term, correction, retain_term = objective.terms(model, batches, ref)
    assert dpo_term.loss.item() == pytest.approx(dpo)
    assert correction.loss.item() == 0.0  # zero in value, it only carries a gradient
    assert retain_term.loss.item() == pytest.approx(weight * RETAIN_SEQ_NLL)
    assert set(retain_term.parts) == {"retain_nll"}
    assert retain_term.parts["retain_nll"].item() == pytest.approx(RETAIN_SEQ_NLL)
    whole = objective(model, batches, ref)
    assert whole.loss.item() == pytest.approx(dpo + weight * RETAIN_SEQ_NLL)
    assert whole.parts["retain_nll"].item() == pytest.approx(RETAIN_SEQ_NLL)


def test_ga_diff_terms_by_hand():
    logits, forget = two_sequences()
    batches = {"forget": forget, "retain": retain_batch(forget)}
    forget_term, retain_term = GradientDifference(retain_weight=2.0).terms(
        FixedLogits(logits), batches)
    assert forget_term.loss.item() == pytest.approx(-NLL_TOKEN_MEAN)
    assert retain_term.loss.item() == pytest.approx(2.0 * RETAIN_TOKEN_NLL)


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
