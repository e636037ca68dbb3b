"""KL_Min, NPO, PO and RMU against values computed by hand (small fixed logits / hidden states).

Conventions: vocab 2, row 0 labels positions 1 and 2, row 1 only position 2 (masked labels,
uneven lengths). Position t's logits predict label t+1.
"""

import math

import pytest
import torch

from unlearn.methods.gradient import GradientAscent, GradientDifference
from unlearn.methods.kl import KLMinimization
from unlearn.methods.losses import IGNORE
from unlearn.methods.preference import NegativePreferenceOptimization, PreferenceOptimization
from unlearn.methods.rmu import RMU, masked_sq_error, random_direction

from .test_losses import FixedLogits, two_sequences

L = math.log


def logsigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def reference_model() -> FixedLogits:
    """Reference logits: row0 pos0 p=(3/4, 1/4), row0 pos1 uniform, row1 pos1 uniform;
    row1 pos0 (unlabelled) deliberately far off, which must not count."""
    logits = torch.zeros(2, 3, 2)
    logits[0, 0] = torch.tensor([L(3.0), 0.0])
    logits[1, 0] = torch.tensor([5.0, 0.0])
    return FixedLogits(logits)


# student probabilities (two_sequences): row0 pos0 (1/2, 1/2), row0 pos1 (3/4, 1/4),
# row1 pos1 (1/5, 4/5); labels: row0 -> 0 then 1, row1 -> 1.
STUDENT_LOGP = [L(1 / 2) + L(1 / 4), L(4 / 5)]
REF_LOGP = [L(3 / 4) + L(1 / 2), L(1 / 2)]
NLL_TOKEN_MEAN = -(L(1 / 2) + L(1 / 4) + L(4 / 5)) / 3


def kl(p, q) -> float:
    return sum(pi * L(pi / qi) for pi, qi in zip(p, q, strict=True))


K1 = kl((3 / 4, 1 / 4), (1 / 2, 1 / 2))  # row0 pos0: P_ref ‖ P_θ
K2 = kl((1 / 2, 1 / 2), (3 / 4, 1 / 4))  # row0 pos1
K3 = kl((1 / 2, 1 / 2), (1 / 5, 4 / 5))  # row1 pos1


def test_ga_sequence_mean_and_ga_diff_with_distinct_batches_by_hand():
    logits, forget = two_sequences()
    model = FixedLogits(logits)
    out = GradientAscent("sequence_mean")(model, {"forget": forget})
    seq = [-(L(1 / 2) + L(1 / 4)) / 2, -L(4 / 5)]
    assert out.loss.item() == pytest.approx(-(seq[0] + seq[1]) / 2)
    retain = dict(forget, labels=torch.tensor([[IGNORE, 1, IGNORE], [IGNORE, 0, 0]]))
    # retain labels: row0 pos0 -> 1 (p 1/2); row1 pos0 -> 0 (p 1/2), row1 pos1 -> 0 (p 1/5)
    retain_nll = -(L(1 / 2) + L(1 / 2) + L(1 / 5)) / 3
    out = GradientDifference(retain_weight=2.0)(model, {"forget": forget, "retain": retain})
    assert out.loss.item() == pytest.approx(-NLL_TOKEN_MEAN + 2.0 * retain_nll)
    assert out.parts["retain_nll"].item() == pytest.approx(retain_nll)


@pytest.mark.parametrize(("kl_reduction", "expected_kl"), [
    ("token_mean", (K1 + K2 + K3) / 3),
    ("sequence_sum", (K1 + K2 + K3) / 2),        # sum / batch size (MLLMU 'batchmean')
    ("sequence_mean", ((K1 + K2) / 2 + K3) / 2),
])
def test_kl_min_by_hand(kl_reduction, expected_kl):
    logits, batch = two_sequences()
    objective = KLMinimization(beta=0.5, kl_reduction=kl_reduction)
    out = objective(FixedLogits(logits), {"forget": batch, "retain": batch}, reference_model())
    assert out.parts["retain_kl"].item() == pytest.approx(expected_kl)
    assert out.loss.item() == pytest.approx(-NLL_TOKEN_MEAN + 0.5 * expected_kl)


def test_kl_min_optional_retain_nll_and_zero_kl_against_itself():
    logits, batch = two_sequences()
    model = FixedLogits(logits)
    out = KLMinimization(retain_nll_weight=1.0)(model, {"forget": batch, "retain": batch},
                                                 FixedLogits(logits))
    assert out.parts["retain_kl"].item() == pytest.approx(0.0, abs=1e-7)
    assert out.loss.item() == pytest.approx(-NLL_TOKEN_MEAN + NLL_TOKEN_MEAN)
    with pytest.raises(ValueError, match="needs a reference"):
        KLMinimization()(model, {"forget": batch, "retain": batch})
    with pytest.raises(ValueError, match="method.objective.kl_reduction='mean'"):
        KLMinimization(kl_reduction="mean")


@pytest.mark.parametrize("beta", [0.9, 0.1])
def test_npo_sequence_sum_by_hand(beta):
    logits, batch = two_sequences()
    ratios = [s - r for s, r in zip(STUDENT_LOGP, REF_LOGP, strict=True)]
    expected = -(2 / beta) * sum(logsigmoid(-beta * x) for x in ratios) / 2
    out = NegativePreferenceOptimization(beta=beta)(FixedLogits(logits), {"forget": batch},
                                                    reference_model())
    assert out.loss.item() == pytest.approx(expected)
    unscaled = NegativePreferenceOptimization(beta=beta, scale_2_over_beta=False)(
        FixedLogits(logits), {"forget": batch}, reference_model())
    assert unscaled.loss.item() == pytest.approx(expected * beta / 2)  # Vgid eq. 10 as printed


def test_npo_token_mean_is_mllmu_batch_scalar_form():
    logits, batch = two_sequences()
    ref_nll = -(L(3 / 4) + L(1 / 2) + L(1 / 2)) / 3
    r = NLL_TOKEN_MEAN - ref_nll  # NLL_cur - NLL_ref (MLLMU's r)
    expected = -(2 / 0.4) * logsigmoid(0.4 * r)
    out = NegativePreferenceOptimization(beta=0.4, reduction="token_mean")(
        FixedLogits(logits), {"forget": batch}, reference_model())
    assert out.loss.item() == pytest.approx(expected)
    assert NegativePreferenceOptimization(retain_weight=1.0).splits == ("forget", "retain")
    assert NegativePreferenceOptimization().splits == ("forget",)


def test_npo_at_the_reference_equals_2_over_beta_log2():
    logits, batch = two_sequences()
    out = NegativePreferenceOptimization(beta=0.5)(FixedLogits(logits), {"forget": batch},
                                                   FixedLogits(logits))
    assert out.loss.item() == pytest.approx(4 * math.log(2))


def test_po_dpo_by_hand():
    logits, forget = two_sequences()
    refusal = dict(forget, labels=torch.tensor([[IGNORE, 1, 0], [IGNORE, IGNORE, 0]]))
    # refusal labels: row0 1 then 0, row1 0.  student: row0 L(1/2)+L(3/4), row1 L(1/5);
    # reference: row0 L(1/4)+L(1/2), row1 L(1/2)
    win = [L(1 / 2) + L(3 / 4) - (L(1 / 4) + L(1 / 2)), L(1 / 5) - L(1 / 2)]
    lose = [s - r for s, r in zip(STUDENT_LOGP, REF_LOGP, strict=True)]
    beta = 0.1
    expected = -sum(logsigmoid(beta * (w - lo)) for w, lo in zip(win, lose, strict=True)) / 2
    objective = PreferenceOptimization(beta=beta)
    assert objective.splits == ("forget", "forget_refusal")
    out = objective(FixedLogits(logits), {"forget": forget, "forget_refusal": refusal},
                    reference_model())
    assert out.loss.item() == pytest.approx(expected)
    assert out.parts["margin"].item() == pytest.approx(
        sum(w - lo for w, lo in zip(win, lose, strict=True)) / 2)
    scaled = PreferenceOptimization(beta=beta, scale_2_over_beta=True)(
        FixedLogits(logits), {"forget": forget, "forget_refusal": refusal}, reference_model())
    assert scaled.loss.item() == pytest.approx(expected * 2 / beta)


def test_rmu_losses_by_hand():
    # d = 2; u fixed to (0.6, 0.8); λ = 2; forget row0 labels at t=1,2, row1 at t=2 only
    labels = torch.tensor([[IGNORE, 5, 5], [IGNORE, IGNORE, 5]])
    h_f = torch.tensor([[[9.0, 9.0], [1.0, 2.0], [0.0, 0.0]],
                        [[9.0, 9.0], [9.0, 9.0], [3.0, 0.0]]])
    ref_f = torch.tensor([[[1.0, 1.0], [3.0, 4.0], [0.0, 5.0]],
                          [[1.0, 1.0], [1.0, 1.0], [6.0, 8.0]]])
    objective = RMU(layer=0, steering=2.0, retain_weight=0.5)
    objective.u = torch.tensor([0.6, 0.8])
    # targets: 2·‖ref‖·u -> row0 t1: 10·u = (6, 8); t2: 10·u = (6, 8); row1 t2: 20·u = (12, 16)
    e01 = ((1 - 6) ** 2 + (2 - 8) ** 2) / 2
    e02 = (36 + 64) / 2
    e12 = ((3 - 12) ** 2 + 16 ** 2) / 2
    forget_expected = ((e01 + e02) / 2 + e12) / 2
    h_r = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]])
    ref_r = torch.tensor([[[5.0, 5.0], [1.0, 3.0], [2.0, 2.0]]])
    labels_r = torch.tensor([[IGNORE, 7, 7]])
    retain_expected = ((0 + 4) / 2 + 0) / 2
    f, r = objective.losses(h_f, ref_f, h_r, ref_r, labels, labels_r)
    assert f.item() == pytest.approx(forget_expected)
    assert r.item() == pytest.approx(retain_expected)
    constant = RMU(layer=0, steering=2.0, target_norm="constant")
    constant.u = torch.tensor([0.6, 0.8])  # target 2u = (1.2, 1.6) everywhere
    f, _ = constant.losses(h_f, ref_f, h_r, ref_r, labels, labels_r)
    c01 = ((1 - 1.2) ** 2 + (2 - 1.6) ** 2) / 2
    c02 = (1.2 ** 2 + 1.6 ** 2) / 2
    c12 = ((3 - 1.2) ** 2 + 1.6 ** 2) / 2
    assert f.item() == pytest.approx(((c01 + c02) / 2 + c12) / 2)
    assert masked_sq_error(h_r, ref_r, torch.full((1, 3), IGNORE)).item() == 0.0


def test_random_direction_is_unit_and_seeded():
    u = random_direction(16, seed=3)
    assert u.norm().item() == pytest.approx(1.0)
    assert torch.equal(u, random_direction(16, seed=3))
    assert not torch.equal(u, random_direction(16, seed=4))
    positive = random_direction(16, seed=3, kind="positive")
    assert positive.norm().item() == pytest.approx(1.0) and (positive >= 0).all()
    assert (u < 0).any()  # the sphere has negative entries too


def test_po_refusal_split_is_aligned_with_forget(tmp_path):
    from unlearn.data.datamodule import UnlearnDataModule
    from unlearn.data.schema import Sample
    from unlearn.methods.refusals import REFUSALS

    forget = [Sample(str(i), f"question {i}?", f"answer {i}", "generation", "text_only")
              for i in range(10)]
    objective = PreferenceOptimization(seed=1)
    sets = objective.train_sets(lambda name: {"forget": forget}[name])
    assert [s.question for s in sets["forget_refusal"]] == [s.question for s in forget]
    assert all(s.answer in REFUSALS for s in sets["forget_refusal"])
    assert len({s.answer for s in sets["forget_refusal"]}) > 1  # varied, drawn per sample
    again = PreferenceOptimization(seed=1).train_sets(lambda name: forget)
    assert [s.answer for s in again["forget_refusal"]] == [s.answer for s in sets["forget_refusal"]]

    data = UnlearnDataModule(sets, collate=list, batch_size=3, seed=7,
                             aligned=objective.aligned)
    for _ in range(2):  # two epochs: still in step
        steps = [b for b, *_ in data.train_dataloader()]
        assert len(steps) == 4
        for step in steps:
            assert [s.question for s in step["forget"]] == \
                [s.question for s in step["forget_refusal"]]
    unaligned = UnlearnDataModule(sets, collate=list, batch_size=10, seed=7)
    (step, *_), = list(unaligned.train_dataloader())
    assert [s.question for s in step["forget"]] != [s.question for s in step["forget_refusal"]]

    custom = tmp_path / "idk.txt"
    custom.write_text("No comment.\n\nPass.\n")
    po = PreferenceOptimization(refusals=str(custom))
    assert po.refusals == ("No comment.", "Pass.")
    with_retain = PreferenceOptimization(retain_weight=1.0)
    assert with_retain.splits == ("forget", "forget_refusal", "retain")
