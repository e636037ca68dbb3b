"""MMUnlearner (Huo et al., ACL'25 Findings, section 3): GA_Diff whose forget gradient only
reaches parameters more salient for the forget images than for what must be kept.

Sets (paper eq. 5-6): T = forget image+text questions; P = forget text-only ∪ retain
image+text ∪ retain text-only. T and P's image+text part are the forget and retain profiles'
training items. P's text-only parts (``preserve_text``) are, by default (``full_set``), the
benchmark's pure-text questions of the forget and retain profiles (``Full_Set``'s
pure-text multiple-choice questions as question -> correct option text, no image), as the
official MMUnlearner code builds its preserve set: the real ``ft_Data`` has no text-only
items, so without them P would lose the paper's third desideratum (keep the forget people's
textual knowledge). ``train`` takes the text-only items of the training sets instead (the
synthetic twin has some; the real ``ft_Data`` none, and a warning says so). Note that with
``full_set`` the mask sees the very pure-text questions the forget split's multiple-choice
evaluation asks (as in the official code).
Mask m = 1[(S_T + ε)/(S_P + ε) ≥ β] over the trainable parameters (:mod:`saliency`), cached
on disk (:mod:`mask_cache`). The forget loss trains on T only: the forget profiles' textual
facts are to be kept.

Schedules:

* ``fused`` (paper eq. 3): one step on g = m ⊙ ∇(-L_f) + w·∇L_r. The forget forward runs
  through mask-filtered parameter aliases, so one backward gives exactly g.
* ``official`` (the official MMUnlearner training script): an epoch over the retain set,
  one retain batch per step, and one sequential pass over the forget set in a shuffled order:
  forget batch j at step j·k, k = (retain batches) // (forget batches), so each forget
  sample is seen exactly once per epoch. A step with a forget batch makes an optimizer step
  on m ⊙ ∇(-L_f) first; every step makes one on ∇L_r; one shared AdamW (whose momentum still
  moves masked parameters). The official script builds its iterators once and fails at a
  second epoch; here each epoch makes a new pass. With fewer retain than forget batches,
  k = 1 and the pass stops with the epoch (the official script divides by zero).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, RandomSampler

from unlearn.data.resumable import one_pass_spacing
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
PRESERVE_TEXT: tuple[str, ...] = ("full_set", "train")
PLOT_FILE = "mask_density.png"


def saliency_sets(forget: Sequence[Sample], retain: Sequence[Sample],
                  forget_text: Sequence[Sample] | None = None,
                  retain_text: Sequence[Sample] | None = None
                  ) -> tuple[list[Sample], dict[str, list[Sample]]]:
    """T and the three parts of P (paper eq. 5-6). The text-only parts are ``forget_text`` and
    ``retain_text`` when given (the benchmark's pure-text questions), else the text-only
    items of ``forget`` and ``retain``."""
    def of(samples: Sequence[Sample], modality: str) -> list[Sample]:
        return [s for s in samples if s.modality == modality]

    target = of(forget, "image_text")
    preserve = {"forget_text_only": of(forget_text if forget_text is not None else forget,
                                       "text_only"),
                "retain_image_text": of(retain, "image_text"),
                "retain_text_only": of(retain_text if retain_text is not None else retain,
                                       "text_only")}
    return target, preserve


def saliency_mask(model: torch.nn.Module, sets: Mapping[str, Sequence[Sample]], setup: Setup,
                  *, beta: float, eps: float, preserve_text: str = "full_set",
                  save_fisher: bool = False, title: str = "saliency mask"
                  ) -> tuple[mask_cache.CachedMask, dict[str, Any]]:
    """The ratio mask over the trainable parameters (T, P from ``sets["forget"]`` and
    ``sets["retain"]``), loaded from or saved to the mask cache, its density plotted into the
    run directory; returns the mask and its manifest entry.

    ``preserve_text``: where P's text-only parts come from — ``full_set``, the benchmark's
    pure-text questions (as the official mask script), or ``train``, the training sets'
    text-only items. The cache key holds only what determines the mask (model, data, scope,
    loss scope, β, ε, batch size, seed, parameter shapes, the T and P items), so every
    objective that asks for the same mask on the same scope (MMUnlearner, VKD's
    ``saliency``) shares one file.
    """
    texts: dict[str, list[Sample]] = {}
    if preserve_text == "full_set":
        if setup.bench is None:
            raise ValueError("method.objective.preserve_text='full_set' reads the "
                             "benchmark's pure-text questions: Setup.bench is needed")
        texts = {name: setup.bench.train_set(name) for name in ("forget_text", "retain_text")}
    target, preserve = saliency_sets(sets["forget"], sets["retain"], **texts)
    if not target:
        raise ValueError("the saliency mask needs forget image+text questions (T is empty)")
    for part, samples in preserve.items():
        if not samples:
            log.warning("preserve set part %s is empty (method.objective.preserve_text=%s)",
                        part, preserve_text)
    params = trainable(model)
    key_parts = {
        **setup.provenance, "beta": beta, "eps": eps,
        "batch_size": setup.batch_size, "seed": setup.seed,
        "parameters": fingerprint({n: list(p.shape) for n, p in params.items()}),
        # what T and P hold, item by item (Full_Set is not in the data fingerprint)
        "preserve_text": preserve_text,
        "sets": fingerprint({part: [(s.profile_id, s.question, s.answer) for s in samples]
                             for part, samples in {"target": target, **preserve}.items()}),
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
        "preserve_text": preserve_text, "plot": plot.name, **stats,
    }


class MMUnlearner(Objective):
    """Saliency-masked gradient difference; masks come from :meth:`prepare`."""

    def __init__(self, beta: float = 1.0, eps: float = 1e-15, retain_weight: float = 1.0,
                 schedule: str = "fused", save_fisher: bool = False,
                 reduction: str = "token_mean", preserve_text: str = "full_set"):
        if schedule not in SCHEDULES:
            raise ValueError(f"method.schedule={schedule!r} is not one of {list(SCHEDULES)}")
        self.preserve_text = check_choice("preserve_text", preserve_text, PRESERVE_TEXT)
        if beta <= 0 or eps < 0:
            raise ValueError(f"need method.objective.beta > 0 and eps >= 0, got {beta}, {eps}")
        self.beta, self.eps, self.retain_weight = float(beta), float(eps), float(retain_weight)
        self.schedule, self.save_fisher = schedule, bool(save_fisher)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.multi_step = schedule == "official"
        self.splits = ("forget", "retain") if schedule == "fused" else ("retain", "forget")
        # official: one pass over the forget set per epoch, spread over the retain batches
        self.one_pass = ("forget",) if schedule == "official" else ()
        self.masks: dict[str, torch.Tensor] | None = None

    # ---- before training
    def select(self, split: str, samples: Sequence[Sample]) -> list[Sample]:
        if split == "forget":
            return [s for s in samples if s.modality == "image_text"]
        return list(samples)

    def prepare(self, model: torch.nn.Module, sets: Mapping[str, Sequence[Sample]],
                setup: Setup) -> dict[str, Any]:
        """Load or compute the mask on the pre-unlearning model; plot its density."""
        mask, entry = saliency_mask(model, sets, setup, beta=self.beta, eps=self.eps,
                                    preserve_text=self.preserve_text,
                                    save_fisher=self.save_fisher, title="MMUnlearner mask")
        self.masks = mask.masks
        schedule: dict[str, Any] = {"schedule": self.schedule}
        if self.schedule == "official":  # what the data module draws (one_pass)
            retain = -(-len(self.select("retain", sets["retain"])) // setup.batch_size)
            forget = -(-entry["sets"]["target"] // setup.batch_size)
            every = one_pass_spacing(retain, forget)
            schedule |= {"forget_every": every, "forget_batches": forget,
                         "retain_batches": retain, "forget_steps": min(forget, -(-retain // every))}
        return {"mask": {**entry, **schedule}}

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
        """Official schedule: a masked forget step when the step has a forget batch (the
        one-pass loader gives ``{}`` at the others), then a retain step."""
        if batch.get("forget"):
            forget_nll = self.forget_loss(model, batch["forget"])
            yield LossOutput(-forget_nll, {"forget_nll": forget_nll.detach()})
        retain_nll = batch_mean(nll(model, batch["retain"], self.reduction))
        yield LossOutput(self.retain_weight * retain_nll, {"retain_nll": retain_nll.detach()})
