"""Preference-style objectives against a frozen reference: NPO and PO (IdkDPO).

Both compare sequence log-likelihoods log P(y|x) of the student and the reference (``reduction``
``sequence_sum``, the NPO/DPO papers and OpenUnlearning; ``token_mean`` gives MLLMU-Bench's
batch-level token-mean form). Vgid eqs. 9/10 print the losses without the 2/β factor of the
NPO paper; ``scale_2_over_beta`` chooses (NPO: on, as the NPO paper and both official codes;
PO: off, as DPO and Vgid eq. 9). A retain NLL term (OpenUnlearning) is off by default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F

from unlearn.methods.base import (
    LossOutput,
    SampleLoader,
    TermwiseObjective,
    check_choice,
    require_reference,
)
from unlearn.methods.losses import REDUCTIONS, batch_mean, nll, reference_nll
from unlearn.methods.refusals import draw_refusals, load_refusals


class _ReferenceLikelihood(TermwiseObjective):
    """Shared options: β, reduction, 2/β scaling, optional retain NLL weight."""

    needs_reference = True

    def __init__(self, beta: float, reduction: str, scale_2_over_beta: bool,
                 retain_weight: float):
        if beta <= 0:
            raise ValueError(f"method.objective.beta={beta!r} must be > 0")
        self.beta = float(beta)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.scale = 2.0 / self.beta if scale_2_over_beta else 1.0
        self.retain_weight = float(retain_weight)

    def logp_ratio(self, model: torch.nn.Module, reference: torch.nn.Module,
                   batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """log P_θ(y|x) − log P_ref(y|x) (per sequence, or a batch scalar) and the student NLL."""
        student = nll(model, batch, self.reduction)
        return reference_nll(reference, batch, self.reduction) - student, student

    def retain_terms(self, model: torch.nn.Module, batch: Mapping) -> Iterator[LossOutput]:
        """The optional retain term λ·NLL(retain), a separate term of :meth:`terms`."""
        if self.retain_weight:
            retain_nll = batch_mean(nll(model, batch["retain"], self.reduction))
            yield LossOutput(self.retain_weight * retain_nll, {"retain_nll": retain_nll.detach()})


class NegativePreferenceOptimization(_ReferenceLikelihood):
    """NPO: L = -(2/β)·mean logσ(-β·[log P_θ(y|x) − log P_ref(y|x)]) on the forget set."""

    def __init__(self, beta: float = 0.9, reduction: str = "sequence_sum",
                 scale_2_over_beta: bool = True, retain_weight: float = 0.0):
        super().__init__(beta, reduction, scale_2_over_beta, retain_weight)
        self.splits = ("forget", "retain") if self.retain_weight else ("forget",)

    def terms(self, model, batch, reference=None):
        reference = require_reference(self, reference)
        ratio, forget_nll = self.logp_ratio(model, reference, batch["forget"])
        loss = -self.scale * F.logsigmoid(-self.beta * ratio).mean()
        parts = {"forget_nll": batch_mean(forget_nll).detach(),
                 "logp_ratio": ratio.mean().detach()}
        yield LossOutput(loss, parts)
        yield from self.retain_terms(model, batch)


class PreferenceOptimization(_ReferenceLikelihood):
    """PO (IdkDPO): DPO with y⁺ a refusal and y⁻ the original forget answer.

    L = -mean logσ(β·[(log P_θ − log P_ref)(y⁺|x) − (log P_θ − log P_ref)(y⁻|x)]).
    The ``forget_refusal`` split holds the forget samples with a refusal drawn per sample from
    ``refusals`` (built-in list, or a file) with ``seed``, aligned with ``forget`` batch by batch.
    """

    aligned = {"forget_refusal": "forget"}

    def __init__(self, beta: float = 0.1, reduction: str = "sequence_sum",
                 scale_2_over_beta: bool = False, retain_weight: float = 0.0,
                 refusals: str | None = None, seed: int = 0):
        super().__init__(beta, reduction, scale_2_over_beta, retain_weight)
        self.refusals = load_refusals(refusals)
        self.seed = int(seed)
        self.splits = ("forget", "forget_refusal") + (("retain",) if self.retain_weight else ())

    def train_sets(self, load: SampleLoader) -> dict:
        forget = load("forget")
        answers = draw_refusals(len(forget), self.refusals, self.seed)
        sets = {"forget": forget,
                "forget_refusal": [dataclasses.replace(s, answer=a)
                                   for s, a in zip(forget, answers, strict=True)]}
        if self.retain_weight:
            sets["retain"] = load("retain")
        return sets

    def terms(self, model, batch, reference=None):
        reference = require_reference(self, reference)
        win, refusal_nll = self.logp_ratio(model, reference, batch["forget_refusal"])
        lose, forget_nll = self.logp_ratio(model, reference, batch["forget"])
        margin = win - lose
        loss = -self.scale * F.logsigmoid(self.beta * margin).mean()
        parts = {"forget_nll": batch_mean(forget_nll).detach(),
                 "refusal_nll": batch_mean(refusal_nll).detach(),
                 "margin": margin.mean().detach()}
        yield LossOutput(loss, parts)
        yield from self.retain_terms(model, batch)
