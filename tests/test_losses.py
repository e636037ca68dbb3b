"""Likelihood reductions and the GA / GA_Diff objectives against hand-computed values."""

import math

import pytest
import torch

from unlearn.methods.gradient import FineTune, GradientAscent, GradientDifference
from unlearn.methods.losses import IGNORE, reduce_nll, token_logprobs


class FixedLogits(torch.nn.Module):
    """A 'model' whose logits are a parameter: losses can be checked by hand."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = torch.nn.Parameter(logits.clone())

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0):
        # as HF models: a tensor keeps those positions, an int n > 0 the last n
        logits = self.logits
        if isinstance(logits_to_keep, torch.Tensor):
            logits = logits[:, logits_to_keep]
        elif logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return type("Out", (), {"logits": logits})()


def two_sequences():
    # vocab 2; row 0 has labels at positions 1,2; row 1 only at position 2 (uneven lengths).
    logits = torch.zeros(2, 3, 2)
    logits[0, 1] = torch.tensor([math.log(3.0), 0.0])  # p(1) = 1/4
    logits[1, 1] = torch.tensor([0.0, math.log(4.0)])  # p(1) = 4/5
    labels = torch.tensor([[IGNORE, 0, 1], [IGNORE, IGNORE, 1]])
    batch = {"input_ids": torch.zeros(2, 3, dtype=torch.long), "labels": labels}
    return logits, batch


def test_token_logprobs_shift_and_mask():
    logits, batch = two_sequences()
    logp, mask = token_logprobs(logits, batch["labels"])
    assert mask.tolist() == [[True, True], [False, True]]
    assert logp[0, 0].item() == pytest.approx(math.log(0.5))
    assert logp[0, 1].item() == pytest.approx(math.log(0.25))
    assert logp[1, 0].item() == 0.0
    assert logp[1, 1].item() == pytest.approx(math.log(0.8))


def test_reductions_by_hand():
    logits, batch = two_sequences()
    logp, mask = token_logprobs(logits, batch["labels"])
    a, b, c = -math.log(0.5), -math.log(0.25), -math.log(0.8)
    assert reduce_nll(logp, mask, "token_mean").item() == pytest.approx((a + b + c) / 3)
    assert reduce_nll(logp, mask, "sequence_sum").tolist() == pytest.approx([a + b, c])
    assert reduce_nll(logp, mask, "sequence_mean").tolist() == pytest.approx([(a + b) / 2, c])
    with pytest.raises(ValueError, match="token_mean"):
        reduce_nll(logp, mask, "mean")


def test_ga_is_negative_nll_and_one_step_raises_it():
    logits, batch = two_sequences()
    model = FixedLogits(logits)
    expected = (-math.log(0.5) - math.log(0.25) - math.log(0.8)) / 3
    out = GradientAscent()(model, {"forget": batch})
    assert out.loss.item() == pytest.approx(-expected)
    assert out.parts["forget_nll"].item() == pytest.approx(expected)
    out.loss.backward()
    with torch.no_grad():
        model.logits -= 0.5 * model.logits.grad
    after = FineTune()(model, {"train": batch}).loss.item()
    assert after > expected + 0.05


def test_ga_diff_weights_the_retain_term():
    logits, batch = two_sequences()
    model = FixedLogits(logits)
    nll = (-math.log(0.5) - math.log(0.25) - math.log(0.8)) / 3
    out = GradientDifference(retain_weight=0.5)(model, {"forget": batch, "retain": batch})
    assert out.loss.item() == pytest.approx(-nll + 0.5 * nll)
    assert set(out.parts) == {"forget_nll", "retain_nll"}


def test_finetune_sequence_mean_weighs_items_equally():
    logits, batch = two_sequences()
    model = FixedLogits(logits)
    a, b, c = -math.log(0.5), -math.log(0.25), -math.log(0.8)
    assert FineTune()(model, {"train": batch}).loss.item() == pytest.approx((a + b + c) / 3)
    seq = FineTune("sequence_mean")(model, {"train": batch}).loss.item()
    assert seq == pytest.approx(((a + b) / 2 + c) / 2)


def test_lr_schedules_by_hand():
    from unlearn.module import lr_lambda

    wsd = lr_lambda("wsd", warmup_steps=2, total_steps=12, decay_fraction=0.25)
    # warm-up 1/2, 2/2; stable 1.0 until step 9; then (12 - step) / 3
    assert [wsd(s) for s in (0, 1, 2, 8, 9, 10, 11)] == pytest.approx(
        [0.5, 1.0, 1.0, 1.0, 1.0, 2 / 3, 1 / 3])
    cosine = lr_lambda("cosine", warmup_steps=2, total_steps=6)
    assert [round(cosine(s), 4) for s in range(6)] == [0.5, 1.0, 1.0, 0.8536, 0.5, 0.1464]
    linear = lr_lambda("linear", warmup_steps=0, total_steps=4)
    assert [linear(s) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert lr_lambda("constant", 0, 10)(7) == 1.0
    with pytest.raises(ValueError, match="optim.schedule='step'"):
        lr_lambda("step", 0, 1)
