"""Log-likelihoods of candidate answers: what likelihood metrics (docs/likelihood.md) read.

A candidate is the sample with its answer replaced, encoded exactly as training encodes it
(``loss_scope="answer"``): the answer tokens and the closing EOS are scored, prompt and image
tokens are not. So a candidate's likelihood is the one the unlearning objectives move, under
the prompt generation sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from rich.progress import Progress

from unlearn.data.collate import CLEAN, View, encode, pad_batch
from unlearn.data.schema import Sample
from unlearn.errors import UserError
from unlearn.eval.generate import to_device
from unlearn.methods.losses import aligned_logprobs, label_logits


@dataclass(frozen=True)
class AnswerScore:
    """Log-likelihood of one answer: ``logprob`` sums log p over its ``tokens`` answer tokens."""

    logprob: float
    tokens: int

    @property
    def loss(self) -> float:
        """Mean NLL per answer token (CLEAR's ``avg_gt_loss`` for the true answer)."""
        return -self.logprob / self.tokens


@torch.no_grad()
def answer_scores(model: Any, processor: Any, family: str, samples: Sequence[Sample],
                  candidates: Sequence[Sequence[str]], *, batch_size: int = 32,
                  view: View = CLEAN, progress: Progress | None = None,
                  description: str = "likelihood") -> list[list[AnswerScore]]:
    """``[i][j]``: the score of answer ``candidates[i][j]`` to ``samples[i]``.

    Every (sample, candidate) pair is one sequence; the pairs are length-sorted so that
    batches are full and carry little padding, and come back in the order given.
    """
    if len(candidates) != len(samples):
        raise ValueError(f"{len(candidates)} candidate lists for {len(samples)} samples")
    pairs = [(i, j) for i, answers in enumerate(candidates) for j in range(len(answers))]
    encoded = [encode(replace(samples[i], answer=candidates[i][j]), processor, family,
                      with_answer=True, loss_scope="answer", view=view) for i, j in pairs]
    order = sorted(range(len(pairs)), key=lambda k: len(encoded[k]["input_ids"]))
    scores: dict[tuple[int, int], AnswerScore] = {}
    pad_id = processor.tokenizer.pad_token_id
    task = progress.add_task(description, total=len(pairs)) if progress else None
    was_training = model.training
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = to_device(pad_batch([encoded[k] for k in idx], pad_id, "right"), model)
        logp, mask = aligned_logprobs(*label_logits(model, batch))
        for k, total, count in zip(idx, logp.sum(1).tolist(), mask.sum(1).tolist(),
                                   strict=True):
            scores[pairs[k]] = AnswerScore(total, int(count))
        if progress:
            progress.advance(task, len(idx))
    model.train(was_training)
    return [[scores[i, j] for j in range(len(answers))] for i, answers in enumerate(candidates)]


def _perturbed(sample: Sample) -> list[str]:
    """The wrong answers in ``sample.meta["perturbed"]`` (none when the key is absent)."""
    perturbed = sample.meta.get("perturbed") or []
    if not isinstance(perturbed, list | tuple) or not all(isinstance(p, str) for p in perturbed):
        raise UserError(f"sample {sample.profile_id!r}: meta['perturbed'] is {perturbed!r}; "
                        "expected a list of answer strings")
    return list(perturbed)


def likelihood_rows(model: Any, processor: Any, family: str, samples: Sequence[Sample], *,
                    batch_size: int, view: View = CLEAN,
                    progress: Progress | None = None) -> list[dict[str, Any]]:
    """Per sample the mean per-token losses that CLEAR's metrics take.

    ``gt_loss``: of ``sample.answer``; ``paraphrase_loss``: of ``meta["paraphrase"]``, the
    ``gt_loss`` when it is absent or the answer itself; ``perturbed_loss``: one per
    ``meta["perturbed"]`` wrong answer, empty when there are none.
    """
    paraphrases = [s.meta.get("paraphrase") for s in samples]
    own = [p is not None and p != s.answer for s, p in zip(samples, paraphrases, strict=True)]
    candidates = [[s.answer, *([p] if has else []), *_perturbed(s)]
                  for s, p, has in zip(samples, paraphrases, own, strict=True)]
    scores = answer_scores(model, processor, family, samples, candidates,
                           batch_size=batch_size, view=view, progress=progress)
    rows = []
    for sample_scores, has in zip(scores, own, strict=True):
        losses = [score.loss for score in sample_scores]
        rows.append({"gt_loss": losses[0], "paraphrase_loss": losses[int(has)],
                     "perturbed_loss": losses[1 + int(has):]})
    return rows
