"""Batched greedy generation: length-sorted, left-padded, new tokens only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from rich.progress import Progress

from unlearn.data.collate import CLEAN, View, encode, pad_batch
from unlearn.data.schema import Sample


def to_device(batch: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Move a batch to the model's device; float image tensors take the model's dtype."""
    dtype = next(model.parameters()).dtype
    return {k: v.to(model.device, dtype=dtype if v.is_floating_point() else v.dtype)
            for k, v in batch.items()}


@torch.no_grad()
def generate(model: Any, processor: Any, family: str, samples: Sequence[Sample], *,
             max_new_tokens: int, batch_size: int = 32, view: View = CLEAN,
             progress: Progress | None = None, description: str = "generate") -> list[str]:
    """Greedy answers of ``model`` to ``samples``, in the order given."""
    encoded = [encode(s, processor, family, with_answer=False, view=view) for s in samples]
    order = sorted(range(len(samples)), key=lambda i: len(encoded[i]["input_ids"]))
    tok = processor.tokenizer
    outputs: list[str] = [""] * len(samples)
    task = progress.add_task(description, total=len(samples)) if progress else None
    was_training = model.training
    model.eval()
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = to_device(pad_batch([encoded[i] for i in idx], tok.pad_token_id, "left"), model)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new = out[:, batch["input_ids"].shape[1]:]
        for i, text in zip(idx, tok.batch_decode(new, skip_special_tokens=True), strict=True):
            outputs[i] = text
        if progress:
            progress.advance(task, len(idx))
    model.train(was_training)
    return outputs
