"""Samples to model inputs: one encoder for every family, labels over exactly the trained tokens.

The prompt goes through the processor (which expands image placeholders and computes pixel
values) and the answer is tokenised separately and appended, so the prompt tokens are by
construction a prefix of the training sequence and the evaluation prompt is token-for-token
the training prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from unlearn.data.prompts import answer_text, build_prompt
from unlearn.data.schema import Sample

IGNORE = -100
LOSS_SCOPES: tuple[str, ...] = ("answer", "full")
IMAGE_KEYS: tuple[str, ...] = ("pixel_values", "image_grid_thw")


@dataclass(frozen=True)
class View:
    """How a sample is shown to a model: prompt additions and an optional replacement image.

    The default view is the clean input; teacher views (perturbed image, unlearning
    instruction) and attacks (reverse prompt) are other views of the same sample.
    """

    instruction: str = ""
    suffix: str = ""
    image_transform: Any = None  # callable PIL -> PIL, or None

    def image(self, sample: Sample) -> Image.Image | None:
        if not sample.has_image:
            return None
        return self.image_transform(sample.image) if self.image_transform else sample.image


CLEAN = View()


def image_token_ids(processor: Any) -> set[int]:
    tok = processor.tokenizer
    names = [getattr(processor, "image_token", None), getattr(processor, "video_token", None)]
    return {tok.convert_tokens_to_ids(n) for n in names if n}


def encode(
    sample: Sample,
    processor: Any,
    family: str,
    *,
    with_answer: bool,
    loss_scope: str = "answer",
    view: View = CLEAN,
) -> dict[str, torch.Tensor]:
    """One sample to unpadded tensors (1-D token rows, image tensors as the processor gives)."""
    if loss_scope not in LOSS_SCOPES:
        raise ValueError(f"loss_scope={loss_scope!r} is not one of {list(LOSS_SCOPES)}")
    prompt = build_prompt(
        sample, family, processor, instruction=view.instruction, suffix=view.suffix
    )
    image = view.image(sample)
    images = [shot.image for shot in sample.meta.get("shots", []) if shot.has_image]
    images += [image] if image is not None else []
    enc = processor(text=[prompt], images=images or None, return_tensors="pt")
    out: dict[str, torch.Tensor] = {"input_ids": enc["input_ids"][0]}
    if "mm_token_type_ids" in enc:
        out["mm_token_type_ids"] = enc["mm_token_type_ids"][0]
    for key in IMAGE_KEYS:
        if key in enc and images:
            out[key] = enc[key]
    if not with_answer:
        return out
    tok = processor.tokenizer
    ans = tok(answer_text(prompt, sample.answer), add_special_tokens=False)["input_ids"]
    ans = torch.tensor([*ans, tok.eos_token_id], dtype=torch.long)
    prompt_ids = out["input_ids"]
    if loss_scope == "answer":
        prompt_labels = torch.full_like(prompt_ids, IGNORE)
    else:
        prompt_labels = prompt_ids.clone()
        for tid in image_token_ids(processor):
            prompt_labels[prompt_labels == tid] = IGNORE
    out["input_ids"] = torch.cat([prompt_ids, ans])
    out["labels"] = torch.cat([prompt_labels, ans])
    if "mm_token_type_ids" in out:
        out["mm_token_type_ids"] = torch.cat(
            [out["mm_token_type_ids"], torch.zeros_like(ans)]
        )
    return out


def pad_batch(items: Sequence[dict[str, torch.Tensor]], pad_id: int, side: str) -> dict:
    """Pad token rows (right for training, left for generation) and concatenate images."""
    length = max(len(it["input_ids"]) for it in items)
    fills = {"input_ids": pad_id, "labels": IGNORE, "mm_token_type_ids": 0, "attention_mask": 0}
    batch: dict[str, torch.Tensor] = {}
    rows = [dict(it, attention_mask=torch.ones_like(it["input_ids"])) for it in items]
    for key, fill in fills.items():
        if key not in rows[0]:
            continue
        padded = torch.full((len(rows), length), fill, dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row[key])
            if side == "right":
                padded[i, :n] = row[key]
            else:
                padded[i, length - n:] = row[key]
        batch[key] = padded
    for key in IMAGE_KEYS:
        parts = [it[key] for it in items if key in it]
        if parts:
            batch[key] = torch.cat(parts)
    return batch


def length_groups(items: Sequence[dict[str, torch.Tensor]], groups: int
                  ) -> list[list[dict[str, torch.Tensor]]]:
    """``items`` sorted by length and cut into ``groups`` near-equal runs (none empty).

    Padded one run at a time, a batch of mixed lengths (image+text and text-only items,
    options or not) carries far less padding, and the runs together are still the batch.
    """
    ranked = sorted(items, key=lambda it: len(it["input_ids"]))
    k = max(1, min(groups, len(ranked)))
    return [ranked[i * len(ranked) // k:(i + 1) * len(ranked) // k] for i in range(k)]


class Collator:
    """Picklable collate function (DDP spawn and DataLoader workers need that).

    ``length_groups > 1`` returns the batch as that many padded sub-batches of similar
    lengths (a list; see :func:`length_groups`), for objectives whose loss sums over them.
    """

    def __init__(self, processor: Any, family: str, *, with_answer: bool = True,
                 loss_scope: str = "answer", view: View = CLEAN, side: str = "right",
                 length_groups: int = 1):
        self.processor, self.family, self.view, self.side = processor, family, view, side
        self.with_answer, self.loss_scope = with_answer, loss_scope
        if length_groups < 1:
            raise ValueError(f"length_groups={length_groups!r} must be >= 1")
        self.length_groups = length_groups

    def __call__(self, samples: Sequence[Sample]
                 ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        items = [
            encode(s, self.processor, self.family, with_answer=self.with_answer,
                   loss_scope=self.loss_scope, view=self.view)
            for s in samples
        ]
        pad_id = self.processor.tokenizer.pad_token_id
        if self.length_groups == 1:
            return pad_batch(items, pad_id, self.side)
        return [pad_batch(run, pad_id, self.side)
                for run in length_groups(items, self.length_groups)]
