"""KL_Min: gradient ascent on the forget set, KL to the frozen reference on the retain set.

Vgid eq. 8 (docs/fidelity.md §4): L = -NLL(forget) + β·KL(P_ref ‖ P_θ)(retain). The KL is taken at
the positions that predict labelled tokens (answer tokens by default, ``loss_scope: full`` for
every non-image token), summed over the vocabulary, then reduced by ``kl_reduction``:
``token_mean`` (Open-MMUnlearning) or ``sequence_sum`` (sum / batch size, as MLLMU-Bench's
``kl_div(..., 'batchmean')``, which however covers every position). MLLMU-Bench's script also
adds the retain NLL: ``retain_nll_weight: 1`` reproduces that.
"""

from __future__ import annotations

from unlearn.methods.base import (
    LossOutput,
    TermwiseObjective,
    check_choice,
    require_reference,
)
from unlearn.methods.losses import (
    REDUCTIONS,
    batch_mean,
    kl_per_token,
    logits_of,
    masked_reduce,
    nll,
    reduce_nll,
    reference_logits,
    token_logprobs,
)


class KLMinimization(TermwiseObjective):
    """L = -NLL(forget) + β·KL(P_ref ‖ P_θ)(retain) [+ retain_nll_weight·NLL(retain)]."""

    splits = ("forget", "retain")
    needs_reference = True

    def __init__(self, beta: float = 1.0, retain_nll_weight: float = 0.0,
                 reduction: str = "token_mean", kl_reduction: str = "token_mean"):
        self.beta = float(beta)
        self.retain_nll_weight = float(retain_nll_weight)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.kl_reduction = check_choice("kl_reduction", kl_reduction, REDUCTIONS)

    def terms(self, model, batch, reference=None):
        reference = require_reference(self, reference)
        forget_nll = batch_mean(nll(model, batch["forget"], self.reduction))
        yield LossOutput(-forget_nll, {"forget_nll": forget_nll.detach()})
        retain = batch["retain"]
        logits = logits_of(model, retain)
        kl_tok, mask = kl_per_token(logits, reference_logits(reference, retain), retain["labels"])
        kl = batch_mean(masked_reduce(kl_tok, mask, self.kl_reduction))
        loss, parts = self.beta * kl, {"retain_kl": kl.detach()}
        if self.retain_nll_weight:
            logp, mask = token_logprobs(logits, retain["labels"])
            retain_nll = batch_mean(reduce_nll(logp, mask, self.reduction))
            loss = loss + self.retain_nll_weight * retain_nll
            parts["retain_nll"] = retain_nll.detach()
        yield LossOutput(loss, parts)
