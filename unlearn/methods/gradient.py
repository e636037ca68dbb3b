"""Likelihood-based objectives: fine-tuning, gradient ascent and gradient difference.

Formulas: Vgid appendix A.3.2 eqs. 6-7 (docs/fidelity.md §2-3). Losses are over the labelled
tokens the collator marks (answer tokens by default, ``loss_scope: full`` for the official MLLMU
convention).
"""

from __future__ import annotations

from unlearn.methods.base import LossOutput, Objective, TermwiseObjective, check_choice
from unlearn.methods.losses import REDUCTIONS, batch_mean, nll


class FineTune(Objective):
    """Plain NLL on the ``train`` split: the vanilla (knowledge-injection) stage.

    ``reduction="sequence_mean"`` weights every item equally, so one-token answers (an option
    letter) are not drowned by sentence answers as under the token mean.
    """

    splits = ("train",)
    length_groups = True  # nll sums the groups into the whole batch's loss

    def __init__(self, reduction: str = "token_mean"):
        self.reduction = reduction

    def __call__(self, model, batch, reference=None) -> LossOutput:
        loss = nll(model, batch["train"], self.reduction)
        if loss.dim():
            loss = loss.mean()
        return LossOutput(loss, {"nll": loss.detach()})


class GradientAscent(Objective):
    """GA: L = -NLL(forget); ``reduction`` token_mean (HF / MLLMU default) or per sequence."""

    splits = ("forget",)

    def __init__(self, reduction: str = "token_mean"):
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)

    def __call__(self, model, batch, reference=None) -> LossOutput:
        forget_nll = batch_mean(nll(model, batch["forget"], self.reduction))
        return LossOutput(-forget_nll, {"forget_nll": forget_nll.detach()})


class GradientDifference(TermwiseObjective):
    """GA_Diff: L = -NLL(forget) + λ·NLL(retain) (λ = ``retain_weight``), one paired step.

    The paired form follows OpenUnlearning (one forget batch with one random retain batch);
    MLLMU-Bench's official script makes sequential passes instead (docs/fidelity.md §3).
    """

    splits = ("forget", "retain")

    def __init__(self, retain_weight: float = 1.0, reduction: str = "token_mean"):
        self.retain_weight = float(retain_weight)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)

    def terms(self, model, batch, reference=None):
        forget_nll = batch_mean(nll(model, batch["forget"], self.reduction))
        yield LossOutput(-forget_nll, {"forget_nll": forget_nll.detach()})
        retain_nll = batch_mean(nll(model, batch["retain"], self.reduction))
        yield LossOutput(self.retain_weight * retain_nll, {"retain_nll": retain_nll.detach()})
