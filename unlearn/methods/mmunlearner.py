"""MMUnlearner (Huo et al., ACL'25 Findings; methods.md §1): GA_Diff whose forget gradient only
reaches parameters more salient for the forget images than for what must be kept.

Sets (paper eq. 5-6), from the training sets of the forget and retain profiles:
T = forget image+text questions; P = forget text-only ∪ retain image+text ∪ retain text-only.
Mask m = 1[(S_T + ε)/(S_P + ε) ≥ β] over the trainable parameters (:mod:`saliency`), cached
on disk (:mod:`mask_cache`). The forget loss trains on T only: the forget profiles' textual
facts are to be kept.

Schedules:

* ``fused`` (paper eq. 3): one step on g = m ⊙ ∇(-L_f) + w·∇L_r. The forget forward runs
  through mask-filtered parameter aliases, so one backward gives exactly g.
* ``official`` (``MLLMU_manifold.py``): an epoch over the retain set; every
  ``len(retain) // len(forget)`` batches an optimizer step on m ⊙ ∇(-L_f), and every batch a
  step on ∇L_r, with one shared AdamW (whose momentum still moves masked parameters).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler

from unlearn.data.schema import Sample
from unlearn.methods import mask_cache
from unlearn.methods.base import LossOutput, Objective, Setup, check_choice
from unlearn.methods.losses import REDUCTIONS, batch_mean, nll, reduce_nll, token_logprobs
from unlearn.methods.mask_report import density, plot_density
from unlearn.methods.saliency import (
    check_aligned,
    fisher_diag,
    masked_forward,
    ratio_mask,
    trainable,
)
from unlearn.models.modules import module_groups
from unlearn.utils import fingerprint

log = logging.getLogger(__name__)

SCHEDULES: tuple[str, ...] = ("fused", "official")
PLOT_FILE = "mask_density.png"


def saliency_sets(forget: Sequence[Sample], retain: Sequence[Sample]
                  ) -> tuple[list[Sample], dict[str, list[Sample]]]:
    """T and the three parts of P (paper eq. 5-6)."""
    def of(samples: Sequence[Sample], modality: str) -> list[Sample]:
        return [s for s in samples if s.modality == modality]

    target = of(forget, "image_text")
    preserve = {"forget_text_only": of(forget, "text_only"),
                "retain_image_text": of(retain, "image_text"),
                "retain_text_only": of(retain, "text_only")}
    return target, preserve


def saliency_mask(model: torch.nn.Module, sets: Mapping[str, Sequence[Sample]], setup: Setup,
                  *, beta: float, eps: float, save_fisher: bool = False,
                  title: str = "saliency mask") -> tuple[mask_cache.CachedMask, dict[str, Any]]:
    """The ratio mask over the trainable parameters (T, P from ``sets["forget"]`` and
    ``sets["retain"]``), loaded from or saved to the mask cache, its density plotted into the
    run directory; returns the mask and its manifest entry.

    The cache key holds only what determines the mask (model, data, scope, loss scope, β, ε,
    batch size, seed, parameter shapes), so every objective that asks for the same mask on the
    same scope (MMUnlearner, VKD's ``saliency``) shares one file.
    """
    target, preserve = saliency_sets(sets["forget"], sets["retain"])
    if not target:
        raise ValueError("the saliency mask needs forget image+text questions (T is empty)")
    for part, samples in preserve.items():
        if not samples:
            log.warning("preserve set part %s is empty", part)
    params = trainable(model)
    key_parts = {
        **setup.provenance, "beta": beta, "eps": eps,
        "batch_size": setup.batch_size, "seed": setup.seed,
        "parameters": fingerprint({n: list(p.shape) for n, p in params.items()}),
    }

    def loader(samples: Sequence[Sample], offset: int) -> DataLoader:
        gen = torch.Generator().manual_seed(setup.seed + offset)
        return DataLoader(list(samples), batch_size=setup.batch_size,
                          sampler=RandomSampler(samples, generator=gen),
                          collate_fn=setup.collate)

    def saliencies() -> mask_cache.Saliencies:
        s_t = fisher_diag(model, loader(target, 0), params)
        parts = [loader(s, i + 1) for i, s in enumerate(preserve.values()) if s]
        s_p = fisher_diag(model, (b for part in parts for b in part), params)
        return s_t, s_p

    start = time.time()
    found = mask_cache.load_or_compute(
        setup.cache_dir, key_parts, saliencies,
        lambda s: ratio_mask(*s, beta=beta, eps=eps), save_fisher=save_fisher)
    check_aligned(found.masks, params)
    stats = density(found.masks, module_groups(model))
    plot = plot_density(stats, setup.run_dir / PLOT_FILE,
                        title=f"{title} (β={beta:g}, ε={eps:g}): "
                              f"{stats['fraction']:.1%} of {stats['total']:,} selected")
    return found, {
        "path": str(found.path), "key": found.key, "cached": found.cached,
        "seconds": round(time.time() - start, 2),
        "bytes": found.bytes_on_disk,
        "bytes_per_param": round(found.bytes_on_disk / max(1, stats["total"]), 4),
        "sets": {"target": len(target), **{k: len(v) for k, v in preserve.items()}},
        "plot": plot.name, **stats,
    }


class MMUnlearner(Objective):
    """Saliency-masked gradient difference; masks come from :meth:`prepare`."""

    def __init__(self, beta: float = 1.0, eps: float = 1e-15, retain_weight: float = 1.0,
                 schedule: str = "fused", save_fisher: bool = False,
                 reduction: str = "token_mean"):
        if schedule not in SCHEDULES:
            raise ValueError(f"method.schedule={schedule!r} is not one of {list(SCHEDULES)}")
        if beta <= 0 or eps < 0:
            raise ValueError(f"need method.objective.beta > 0 and eps >= 0, got {beta}, {eps}")
        self.beta, self.eps, self.retain_weight = float(beta), float(eps), float(retain_weight)
        self.schedule, self.save_fisher = schedule, bool(save_fisher)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.multi_step = schedule == "official"
        self.splits = ("forget", "retain") if schedule == "fused" else ("retain", "forget")
        self.masks: dict[str, torch.Tensor] | None = None
        self.forget_every = 1

    # ---- before training
    def select(self, split: str, samples: Sequence[Sample]) -> list[Sample]:
        if split == "forget":
            return [s for s in samples if s.modality == "image_text"]
        return list(samples)

    def prepare(self, model: torch.nn.Module, sets: Mapping[str, Sequence[Sample]],
                setup: Setup) -> dict[str, Any]:
        """Load or compute the mask on the pre-unlearning model; plot its density."""
        mask, entry = saliency_mask(model, sets, setup, beta=self.beta, eps=self.eps,
                                    save_fisher=self.save_fisher, title="MMUnlearner mask")
        self.masks = mask.masks
        if self.schedule == "official":
            self.forget_every = max(1, len(sets["retain"]) // entry["sets"]["target"])
        return {"mask": {**entry, "schedule": self.schedule, "forget_every": self.forget_every}}

    # ---- training
    def _device_masks(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Masks as bool tensors on their parameters' devices (moved once)."""
        if self.masks is None:
            raise RuntimeError("MMUnlearner.prepare() must run before training (no mask)")
        params = trainable(model)
        check_aligned(self.masks, params)
        for name, p in params.items():
            if self.masks[name].device != p.device:
                self.masks[name] = self.masks[name].to(p.device)
        return self.masks

    def forget_loss(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]
                    ) -> torch.Tensor:
        """NLL of the forget batch whose gradient reaches parameters only where m = 1."""
        logits = masked_forward(model, self._device_masks(model), batch)
        logp, mask = token_logprobs(logits, batch["labels"])
        return batch_mean(reduce_nll(logp, mask, self.reduction))

    def __call__(self, model, batch, reference=None) -> LossOutput:
        forget_nll = self.forget_loss(model, batch["forget"])
        retain_nll = batch_mean(nll(model, batch["retain"], self.reduction))
        loss = -forget_nll + self.retain_weight * retain_nll
        return LossOutput(loss, {"forget_nll": forget_nll.detach(),
                                 "retain_nll": retain_nll.detach()})

    def step_losses(self, model, batch, reference, batch_idx) -> Iterator[LossOutput]:
        if batch_idx % self.forget_every == 0:
            forget_nll = self.forget_loss(model, batch["forget"])
            yield LossOutput(-forget_nll, {"forget_nll": forget_nll.detach()})
        retain_nll = batch_mean(nll(model, batch["retain"], self.reduction))
        yield LossOutput(self.retain_weight * retain_nll, {"retain_nll": retain_nll.detach()})
