"""What a run does differently from the papers' and official code's settings, for its manifest.

One line per deviation that applies to the run's config, named as in ``docs/fidelity.md``
(which gives the reason and the switch of each), plus the section of the run's method there.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

DOC = "docs/fidelity.md"
SECTIONS = {"ga": 2, "ga_diff": 3, "kl_min": 4, "npo": 5, "po": 6, "rmu": 7, "mmunlearner": 8,
            "vgid": 9, "icu_t": 9, "noise_t": 9, "icu": 10, "vkd": 14}
# methods whose official learning rate is constant (the scheduler steps once per epoch)
CONSTANT_LR = ("ga_diff", "kl_min", "vgid", "icu_t", "noise_t")
# methods whose official code makes separate forget and retain passes or steps
PAIRED = ("ga_diff", "kl_min", "mmunlearner", "vgid", "icu_t", "noise_t")


def deviations(cfg: DictConfig) -> dict[str, Any]:
    """The manifest's ``fidelity`` entry: where to read, and the deviations in effect."""
    method = str(cfg.method.name)
    found = []
    trains = OmegaConf.select(cfg, "method.objective") is not None
    if trains:
        scope = cfg.trainable_modules.scope
        if scope != "lora" and method not in ("mmunlearner", "vkd"):
            found.append(f"D2: trainable_modules={scope} trains full weights; the official "
                         "baselines and Vgid train LoRA r16 adapters")
        schedule = OmegaConf.select(cfg, "method.optim.schedule")
        if method in CONSTANT_LR and schedule != "constant":
            found.append(f"D3: method.optim.schedule={schedule}; the official LR is constant")
        clip = OmegaConf.select(cfg, "trainer.gradient_clip_val")
        if clip and method != "mmunlearner":
            found.append(f"D4: gradients clipped at {clip}; the official code does not clip")
        found.append("D5: no 384-token cap (Vgid Table 7)")
        if cfg.method.loss_scope == "answer":
            found.append("D6: losses over the answer tokens; the official code labels every "
                         "non-pad token (method.loss_scope=full)")
        fused = OmegaConf.select(cfg, "method.schedule", default="fused") == "fused"
        if method in PAIRED and fused:
            found.append("D7: one paired forget/retain step; the official code makes "
                         "sequential or interleaved passes")
    section = SECTIONS.get(method)
    return {"doc": f"{DOC} §{section}" if section else DOC, "deviations": found}
