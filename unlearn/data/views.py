"""Teacher views, inference-time interventions and attacks as :class:`View` values.

A Vgid teacher, the ICU baseline and the reverse-prompt attack are all the same samples shown
differently (an instruction before the question, a suffix after it, a replaced image), so they
are built here once and used by the objectives, the collators and the evaluator alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch

from unlearn.data.collate import CLEAN, Collator, View
from unlearn.data.perturb import build_perturbation
from unlearn.data.prompts import ICU_PROMPTS, REVERSE_PROMPT, with_instruction, with_suffix
from unlearn.data.schema import Sample

# Vgid Table 2: which part of a teacher view is applied to a model at inference.
INTERVENTIONS: tuple[str, ...] = ("none", "textual", "visual", "dual")
# Attacks at evaluation: ``reverse_prompt`` is a view of the question; ``relearn`` fine-tunes a
# copy of the evaluated model first (:mod:`unlearn.relearn`), so it is no view.
ATTACKS: tuple[str, ...] = ("none", "reverse_prompt", "relearn")
VIEW_ATTACKS: tuple[str, ...] = ("reverse_prompt",)


def teacher_view(prompt_style: str = "none", perturbation: Mapping[str, Any] | None = None,
                 seed: int = 0) -> View:
    """The ICU instruction of ``prompt_style`` before the question, the image perturbed."""
    if prompt_style not in ICU_PROMPTS:
        raise ValueError(f"prompt_style.name={prompt_style!r} is not one of {list(ICU_PROMPTS)}")
    return View(instruction=with_instruction(ICU_PROMPTS[prompt_style]),
                image_transform=build_perturbation(perturbation, seed))


def intervention_view(intervention: str, prompt_style: str,
                      perturbation: Mapping[str, Any] | None, seed: int = 0) -> View:
    """``textual`` keeps the instruction, ``visual`` the perturbation, ``dual`` both."""
    if intervention not in INTERVENTIONS:
        raise ValueError(f"eval.intervention={intervention!r} is not one of {list(INTERVENTIONS)}")
    textual = intervention in ("textual", "dual")
    visual = intervention in ("visual", "dual")
    return teacher_view(prompt_style if textual else "none", perturbation if visual else None,
                        seed)


def attack_view(view: View, attack: str) -> View:
    """``view`` under ``attack``: the reverse prompt appended once after the question."""
    if attack not in ("none", *VIEW_ATTACKS):
        raise ValueError(f"eval.attack={attack!r} is not one of {['none', *VIEW_ATTACKS]} "
                         "(the attacks that are a view of the question)")
    return view if attack == "none" else replace(view, suffix=with_suffix(REVERSE_PROMPT))


def sample_ids(samples: Sequence[Sample]) -> torch.Tensor:
    """Stable 63-bit ids of samples (profile, task, modality, question, options, answer)."""
    ids = []
    for s in samples:
        key = repr((s.profile_id, s.task, s.modality, s.question, s.options, s.answer))
        ids.append(int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") >> 1)
    return torch.tensor(ids, dtype=torch.long)


class PairCollator:
    """The same samples encoded twice: ``student`` (clean) and ``teacher`` (its view).

    Both encodings carry the same answer tokens as labels, so the objective can align teacher
    and student on the answer positions although their prompts differ in length.
    """

    def __init__(self, processor: Any, family: str, teacher: View, *,
                 loss_scope: str = "answer"):
        self.student = Collator(processor, family, loss_scope=loss_scope, view=CLEAN)
        self.teacher = Collator(processor, family, loss_scope=loss_scope, view=teacher)

    def __call__(self, samples: Sequence[Sample]) -> dict[str, Any]:
        return {"student": self.student(samples), "teacher": self.teacher(samples),
                "ids": sample_ids(samples)}
