"""RMU: steer the hidden states of one decoder layer on the forget set towards a random direction.

Vgid appendix A.3.2 eqs. 11-15 (docs/fidelity.md §7): u ~ Uniform(S^{d-1}) once per run;
forget target v_f = λ·‖h_ref^(l)(x_f)‖₂·u (per token), retain target h_ref^(l)(x_r);
L = L_f + γ·L_r. ``target_norm: constant`` gives OpenUnlearning's target c·u (λ = c) and
``direction: positive`` its u (uniform [0, 1) entries, normalised). Distances are squared errors
averaged over the hidden size (OpenUnlearning; Vgid's ‖·‖² is d times that), then over the
labelled positions of each sequence (answer tokens by default), then over the batch. Layer l is
the output of ``language_model.layers[l]`` (0-based). Which parameters move is set by
``trainable_modules``; the layers after l receive no gradient by construction.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from unlearn.methods.base import LossOutput, Objective, check_choice, require_reference
from unlearn.methods.losses import IGNORE, model_inputs
from unlearn.models.modules import captured, decoder_layers

TARGET_NORMS: tuple[str, ...] = ("reference", "constant")
DIRECTIONS: tuple[str, ...] = ("sphere", "positive")


def viewed(model: torch.nn.Module) -> torch.nn.Module:
    """The model a reference wrapper runs (the wrapper itself may hide it from named_modules)."""
    return getattr(model, "viewed", model)


def layer_module(model: torch.nn.Module, layer: int) -> torch.nn.Module:
    layers = decoder_layers(viewed(model))
    if not 0 <= layer < len(layers):
        raise ValueError(f"method.objective.layer={layer} is out of range for a "
                         f"{len(layers)}-layer language model (0..{len(layers) - 1})")
    return layers[layer]


def random_direction(dim: int, seed: int, kind: str = "sphere") -> torch.Tensor:
    """A unit vector: uniform on the sphere (normalised Gaussian) or with entries in [0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(dim, generator=gen) if kind == "sphere" else torch.rand(dim, generator=gen)
    return u / u.norm()


def masked_sq_error(h: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over d of (h - target)², mean over labelled positions per sequence, mean over batch."""
    per_token = (h.float() - target.float()).pow(2).mean(-1)
    mask = labels != IGNORE
    per_seq = (per_token * mask).sum(1) / mask.sum(1).clamp(min=1)
    return per_seq.mean()


class RMU(Objective):
    """L = mean‖h_θ(x_f) − λ‖h_ref(x_f)‖u‖² + γ·mean‖h_θ(x_r) − h_ref(x_r)‖² at layer ``layer``."""

    splits = ("forget", "retain")
    needs_reference = True

    def __init__(self, layer: int = 7, steering: float = 2.0, retain_weight: float = 1.0,
                 target_norm: str = "reference", direction: str = "sphere", seed: int = 0):
        self.layer = int(layer)
        self.steering = float(steering)
        self.retain_weight = float(retain_weight)
        self.target_norm = check_choice("target_norm", target_norm, TARGET_NORMS)
        self.direction = check_choice("direction", direction, DIRECTIONS)
        self.seed = int(seed)
        self.u: torch.Tensor | None = None  # drawn at the first step, when d is known

    def unit(self, dim: int, like: torch.Tensor) -> torch.Tensor:
        """The run's fixed direction u (drawn once from ``seed``)."""
        if self.u is None or self.u.numel() != dim:
            self.u = random_direction(dim, self.seed, self.direction)
        return self.u.to(like.device)

    def hidden(self, model: torch.nn.Module, batch: Mapping[str, torch.Tensor]
               ) -> torch.Tensor:
        """Layer-l hidden states (B, T, d); only the last position's logits are computed."""
        with captured([layer_module(model, self.layer)]) as store:
            model(**model_inputs(batch), logits_to_keep=1)
        return store[0]

    def losses(self, h_f: torch.Tensor, ref_f: torch.Tensor, h_r: torch.Tensor,
               ref_r: torch.Tensor, labels_f: torch.Tensor, labels_r: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_f, L_r) from layer-l hidden states (B, T, d) of student and reference."""
        u = self.unit(h_f.shape[-1], h_f)
        scale = self.steering
        if self.target_norm == "reference":
            scale = self.steering * ref_f.float().norm(dim=-1, keepdim=True)
        return masked_sq_error(h_f, scale * u, labels_f), masked_sq_error(h_r, ref_r, labels_r)

    def __call__(self, model, batch, reference=None) -> LossOutput:
        reference = require_reference(self, reference)
        forget, retain = batch["forget"], batch["retain"]
        h_f, h_r = self.hidden(model, forget), self.hidden(model, retain)
        with torch.no_grad():
            ref_f, ref_r = self.hidden(reference, forget), self.hidden(reference, retain)
        forget_loss, retain_loss = self.losses(h_f, ref_f, h_r, ref_r,
                                               forget["labels"], retain["labels"])
        loss = forget_loss + self.retain_weight * retain_loss
        return LossOutput(loss, {"forget_rmu": forget_loss.detach(),
                                 "retain_rmu": retain_loss.detach()})
