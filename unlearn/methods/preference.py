"""Preference-style objectives against a frozen reference: NPO and PO (IdkDPO).

Both compare sequence log-likelihoods log P(y|x) of the student and the reference (``reduction``
``sequence_sum``, the NPO/DPO papers and OpenUnlearning; ``token_mean`` gives MLLMU-Bench's
batch-level token-mean form). Vgid eqs. 9/10 print the losses without the 2/β factor of the
NPO paper; ``scale_2_over_beta`` chooses (NPO: on, as the NPO paper and both official codes;
PO: off, as DPO and Vgid eq. 9). A retain NLL term (OpenUnlearning) is off by default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping

import torch
import torch.nn.functional as F

from unlearn.methods.base import (
    LossOutput,
    SampleLoader,
    TermwiseObjective,
    check_choice,
    require_reference,
    summed,
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

    def _reference_logps(self, reference: torch.nn.Module, batch: Mapping
                         ) -> tuple[torch.Tensor, torch.Tensor]:
        """log P_ref of the refusal and of the original answer. Taken before any policy
        forward, so the reference's activations never sit on top of a policy graph."""
        return (-reference_nll(reference, batch["forget_refusal"], self.reduction),
                -reference_nll(reference, batch["forget"], self.reduction))

    def _loss(self, ref_win: torch.Tensor, refusal_nll: torch.Tensor, ref_lose: torch.Tensor,
              forget_nll: torch.Tensor) -> LossOutput:
        """The DPO loss from the reference log-likelihoods and policy NLLs of y⁺ and y⁻."""
        win, lose = -refusal_nll - ref_win, -forget_nll - ref_lose
        margin = win - lose
        loss = -self.scale * F.logsigmoid(self.beta * margin).mean()
        return LossOutput(loss, {"forget_nll": batch_mean(forget_nll).detach(),
                                 "refusal_nll": batch_mean(refusal_nll).detach(),
                                 "margin": margin.mean().detach()})

    def __call__(self, model, batch, reference=None) -> LossOutput:
        """One pass: both answers' graphs stay alive until the backward."""
        ref_win, ref_lose = self._reference_logps(require_reference(self, reference), batch)
        refusal_nll = nll(model, batch["forget_refusal"], self.reduction)
        forget_nll = nll(model, batch["forget"], self.reduction)
        return summed([self._loss(ref_win, refusal_nll, ref_lose, forget_nll),
                       *self.retain_terms(model, batch)])

    def terms(self, model, batch, reference=None):
        """The same gradient with one answer's graph alive at a time (backward_per_term).

        dL(w(θ), l(θ))/dθ = ∂L/∂w·w'(θ) + ∂L/∂l·l'(θ). The first term is the loss with the
        original answer's log-likelihood l read from a forward without graph (a constant);
        the second, zero in value, rebuilds l with its graph and adds ∂L/∂l·l'(θ). Its forward
        replays the random state of the graph-free one, so dropout (LoRA) draws the same
        masks there and training continues from the random state of one pass. Cost: one
        more forward without graph; peak: one answer's graph instead of both.
        """
        ref_win, ref_lose = self._reference_logps(require_reference(self, reference), batch)
        refusal_nll = nll(model, batch["forget_refusal"], self.reduction)
        replay = rng_replay(refusal_nll.device)
        with torch.no_grad():
            forget_value = nll(model, batch["forget"], self.reduction)
        yield self._loss(ref_win, refusal_nll, ref_lose, forget_value)
        replay()
        forget_nll = nll(model, batch["forget"], self.reduction)
        rest = self._loss(ref_win, refusal_nll.detach(), ref_lose, forget_nll).loss
        yield LossOutput(rest - rest.detach())
        yield from self.retain_terms(model, batch)


def rng_replay(device: torch.device) -> Callable[[], None]:
    """A function that puts the CPU generator (and ``device``'s, on CUDA) back to their
    present state, so a later forward draws the same dropout masks."""
    cpu = torch.get_rng_state()
    accelerator = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def replay() -> None:
        torch.set_rng_state(cpu)
        if accelerator is not None:
            torch.cuda.set_rng_state(accelerator, device)

    return replay
