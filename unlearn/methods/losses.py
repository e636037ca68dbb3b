"""Token log-likelihoods and their reductions, shared by every objective.

Reductions are explicit because the papers differ: HF/MLLMU use the token mean over the batch,
NPO/DPO use per-sequence sums. Log-softmax is taken only at supervised positions, which keeps
memory at (labelled tokens x vocab) instead of (all tokens x vocab).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

IGNORE = -100
REDUCTIONS: tuple[str, ...] = ("token_mean", "sequence_sum", "sequence_mean")


def model_inputs(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Everything but the labels: HF models would otherwise compute their own loss."""
    return {k: v for k, v in batch.items() if k != "labels"}


def logits_of(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    return model(**model_inputs(batch)).logits


def shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits predicting token t+1 and the labels they predict."""
    return logits[:, :-1], labels[:, 1:]


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each label token (0 where ignored) and the label mask, both (B, T-1)."""
    return aligned_logprobs(*shifted(logits, labels))


def label_logits(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits only at positions that predict a label, with the labels they predict.

    The LM head runs on the union over the batch of those positions (``logits_to_keep``), not
    on every token: with answer-only labels that skips most of the (tokens x vocab) product,
    which for a 32k-vocabulary 7B model is the largest activation of the step.
    """
    targets = batch["labels"][:, 1:]
    keep = (targets != IGNORE).any(0).nonzero().squeeze(-1)
    logits = model(**model_inputs(batch), logits_to_keep=keep).logits
    return logits, targets[:, keep]


def aligned_logprobs(logits: torch.Tensor, labels: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Like :func:`token_logprobs` for logits already aligned with the labels they predict."""
    mask = labels != IGNORE
    logp = torch.zeros(labels.shape, dtype=torch.float32, device=logits.device)
    picked = logits[mask].float().log_softmax(-1)
    logp[mask] = picked.gather(-1, labels[mask].unsqueeze(-1)).squeeze(-1)
    return logp, mask


def masked_reduce(values: torch.Tensor, mask: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per-position ``values`` (B, T) reduced over ``mask`` under one of ``REDUCTIONS``.

    ``token_mean``: scalar, mean over every masked position of the batch (HF ``outputs.loss``);
    ``sequence_sum``: (B,), sum within each sequence; ``sequence_mean``: (B,), mean within
    each sequence.
    """
    if reduction == "token_mean":
        return (values * mask).sum() / mask.sum().clamp(min=1)
    if reduction == "sequence_sum":
        return (values * mask).sum(1)
    if reduction == "sequence_mean":
        return (values * mask).sum(1) / mask.sum(1).clamp(min=1)
    raise ValueError(f"reduction={reduction!r} is not one of {list(REDUCTIONS)}")


def batch_mean(value: torch.Tensor) -> torch.Tensor:
    """Scalar from a reduced loss: per-sequence values (B,) are averaged over the batch."""
    return value.mean() if value.dim() else value


def reduce_nll(logp: torch.Tensor, mask: torch.Tensor, reduction: str) -> torch.Tensor:
    """Negative log-likelihood under one of ``REDUCTIONS`` (``sequence_sum`` = -log p(y|x))."""
    return masked_reduce(-logp, mask, reduction)


def nll(model: torch.nn.Module,
        batch: Mapping[str, torch.Tensor] | Sequence[Mapping[str, torch.Tensor]],
        reduction: str = "token_mean") -> torch.Tensor:
    """NLL of a batch, or of a batch given as length groups (``Collator(length_groups=k)``).

    For groups the value is that of the whole batch padded as one: the token mean divides by
    the labelled tokens of all groups; per-sequence values come in the groups' (length) order.
    """
    if isinstance(batch, Mapping):
        return reduce_nll(*aligned_logprobs(*label_logits(model, batch)), reduction)
    parts = [aligned_logprobs(*label_logits(model, group)) for group in batch]
    if reduction == "token_mean":
        total = sum(-(logp * mask).sum() for logp, mask in parts)
        return total / sum(mask.sum() for _, mask in parts).clamp(min=1)
    return torch.cat([reduce_nll(logp, mask, reduction) for logp, mask in parts])


def reference_logits(reference: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Logits of the frozen reference: never part of the autograd graph."""
    with torch.no_grad():
        return logits_of(reference, batch)


def reference_nll(reference: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                  reduction: str = "token_mean") -> torch.Tensor:
    logp, mask = token_logprobs(reference_logits(reference, batch), batch["labels"])
    return reduce_nll(logp, mask, reduction)


def kl_per_token(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(P_ref || P_theta) over the vocabulary at each position predicting a labelled token.

    Returns (B, T-1) values (0 where unlabelled) and the label mask, like
    :func:`token_logprobs`; computed in fp32 at labelled positions only.
    """
    logits, shifted_labels = shifted(logits, labels)
    mask = shifted_labels != IGNORE
    log_q = logits[mask].float().log_softmax(-1)
    log_p = ref_logits[:, :-1][mask].float().log_softmax(-1)
    kl = torch.zeros(mask.shape, dtype=torch.float32, device=logits.device)
    kl[mask] = (log_p.exp() * (log_p - log_q)).sum(-1)
    return kl, mask
