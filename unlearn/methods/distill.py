"""Teacher-distribution distillation: Vgid and its single-intervention variants ICU-T, Noise-T.

L = alpha * KL(pi_T || pi_theta) on forget + beta * KL(pi_theta0 || pi_theta) on retain
(Vgid eq. 2-5). The teacher pi_T is the frozen base model on a teacher view of each forget
sample (ICU instruction before the question, perturbed image); the student sees the clean
sample. Teacher and student prompts differ in length, so both are teacher-forced on the same
answer tokens and compared position by position on those (``kl_positions: answer``).
``kl_positions: all`` compares every non-padding position, as the official code does; it
needs prompts of equal length (a perturbation-only teacher).

Deviations from the released code (docs/fidelity.md §9): one combined step instead of
interleaved forget/retain optimiser steps, padding positions never count, a temperature
tau with the usual tau^2 factor (tau = 1 is the paper), and token-mean reduction by default
(``reduction: sequence_sum`` is the official sum over positions divided by the batch size).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from unlearn.data.collate import IGNORE, View
from unlearn.data.views import teacher_view
from unlearn.methods.base import LossOutput, TermwiseObjective
from unlearn.methods.losses import REDUCTIONS, logits_of, masked_reduce

KL_POSITIONS: tuple[str, ...] = ("answer", "all")
Batch = Mapping[str, torch.Tensor]


def kl_mask(batch: Batch, kl_positions: str) -> torch.Tensor:
    """(B, T-1) positions whose logits are compared: they predict an answer / a real token."""
    if kl_positions == "answer":
        return batch["labels"][:, 1:] != IGNORE
    if kl_positions == "all":
        return batch["attention_mask"][:, 1:].bool()
    raise ValueError(f"kl_positions={kl_positions!r} is not one of {list(KL_POSITIONS)}")


def selected(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, V) logits at the masked positions, row by row (logits at t predict token t+1)."""
    return logits[:, :-1][mask].float()


def forward_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor,
               temperature: float = 1.0) -> torch.Tensor:
    """KL(p_T || p_S) per row of (N, V) logits, at temperature tau, times tau^2."""
    t = (teacher_logits.float() / temperature).log_softmax(-1)
    s = (student_logits.float() / temperature).log_softmax(-1)
    return (t.exp() * (t - s)).sum(-1) * temperature**2


def topk_forward_kl(teacher_logp: torch.Tensor, teacher_idx: torch.Tensor,
                    student_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(p_T || p_S) from the teacher's top-k log-probs, the rest of the vocab one bucket.

    Exact when k is the vocabulary size; otherwise a lower bound (log-sum inequality) that
    needs only k values per position to be kept.
    """
    s = (student_logits.float() / temperature).log_softmax(-1)
    s_top = s.gather(-1, teacher_idx)
    p_top = teacher_logp.exp()
    kl = (p_top * (teacher_logp - s_top)).sum(-1)
    rest_t = (1.0 - p_top.sum(-1)).clamp(min=0.0)
    rest_s = (1.0 - s_top.exp().sum(-1)).clamp(min=1e-12)
    kl = kl + torch.xlogy(rest_t, rest_t) - rest_t * rest_s.log()
    return kl * temperature**2


def _per_position(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Flat values at the masked positions back to (B, T-1), zeros elsewhere."""
    out = torch.zeros(mask.shape, dtype=values.dtype, device=values.device)
    out[mask] = values
    return out


class Distillation(TermwiseObjective):
    """Vgid (instruction + perturbation), ICU-T (instruction only), Noise-T (perturbation only).

    ``cache_top_k``: keep each forget sample's teacher top-k log-probs (CPU memory, k values
    per answer position) after its first teacher pass and reuse them in later epochs; null
    runs the teacher every step on fresh noise.
    """

    splits = ("forget", "retain")
    needs_reference = True

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, temperature: float = 1.0,
                 kl_positions: str = "answer", reduction: str = "token_mean",
                 prompt_style: str = "strict", perturbation: Mapping[str, Any] | None = None,
                 seed: int = 0, cache_top_k: int | None = None):
        if kl_positions not in KL_POSITIONS:
            raise ValueError(f"kl_positions={kl_positions!r} is not one of {list(KL_POSITIONS)}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction={reduction!r} is not one of {list(REDUCTIONS)}")
        view = teacher_view(prompt_style, perturbation, seed)
        if not view.instruction and view.image_transform is None:
            raise ValueError("the teacher view equals the student's input: set prompt_style "
                             "and/or perturbation to something other than none")
        self.alpha, self.beta, self.temperature = float(alpha), float(beta), float(temperature)
        self.kl_positions, self.reduction = kl_positions, reduction
        self.views: dict[str, View] = {"forget": view}
        self.cache_top_k = cache_top_k
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _reduce(self, kl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        loss = masked_reduce(_per_position(kl, mask), mask, self.reduction)
        return loss.mean() if loss.dim() else loss

    @torch.no_grad()
    def _teacher_logits(self, reference: torch.nn.Module, forget: Mapping[str, Any],
                        n_student: torch.Tensor) -> torch.Tensor:
        """Teacher logits at its compared positions, checked to align with the student's."""
        teacher = forget["teacher"]
        mask = kl_mask(teacher, self.kl_positions)
        if not torch.equal(mask.sum(1), n_student):
            raise ValueError(
                "teacher and student compare different numbers of positions per sample "
                f"({mask.sum(1).tolist()} vs {n_student.tolist()}); kl_positions=all needs "
                "prompts of equal length (a perturbation-only teacher), answer needs "
                "method.loss_scope=answer")
        return selected(logits_of(reference, teacher), mask)

    def _forget_kl(self, reference: torch.nn.Module, forget: Mapping[str, Any],
                   student: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-position KL(pi_T || pi_theta) on the forget batch, from the cache if asked."""
        n_student = mask.sum(1)
        if self.cache_top_k is None:
            teacher = self._teacher_logits(reference, forget, n_student)
            return forward_kl(teacher, student, self.temperature)
        ids = forget["ids"].tolist()
        if any(i not in self.cache for i in ids):
            teacher = self._teacher_logits(reference, forget, n_student)
            k = min(int(self.cache_top_k), teacher.shape[-1])
            logp = (teacher / self.temperature).log_softmax(-1)
            top, idx = logp.topk(k, dim=-1)
            for i, t, j in zip(ids, top.split(n_student.tolist()),
                               idx.split(n_student.tolist()), strict=True):
                self.cache[i] = (t.cpu(), j.cpu())
        top = torch.cat([self.cache[i][0] for i in ids]).to(student.device)
        idx = torch.cat([self.cache[i][1] for i in ids]).to(student.device)
        return topk_forward_kl(top, idx, student, self.temperature)

    def terms(self, model, batch, reference=None):
        if reference is None:
            raise ValueError("distillation needs the frozen base model (needs_reference)")
        forget = batch["forget"]
        mask = kl_mask(forget["student"], self.kl_positions)
        student = selected(logits_of(model, forget["student"]), mask)
        forget_kl = self._reduce(self._forget_kl(reference, forget, student, mask), mask)
        yield LossOutput(self.alpha * forget_kl, {"forget_kl": forget_kl.detach()})

        retain = batch["retain"]
        rmask = kl_mask(retain, self.kl_positions)
        with torch.no_grad():
            base = selected(logits_of(reference, retain), rmask)
        retain_student = selected(logits_of(model, retain), rmask)
        retain_kl = self._reduce(forward_kl(base, retain_student, self.temperature), rmask)
        yield LossOutput(self.beta * retain_kl, {"retain_kl": retain_kl.detach()})
