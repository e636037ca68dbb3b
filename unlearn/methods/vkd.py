"""VKD, visual knowledge distillation: unlearn what the visual side knows about the forget
people, keep what it knows about everyone else, and train the visual components only
(docs/vkd.md).

The VKD paper ("MLLM Machine Unlearning via Visual Knowledge Distillation") supervises the
vision side with a teacher model's *intermediate visual features* instead of output-level
signals, fine-tunes only the visual module (the LLM stays frozen) and adds saliency masking.
It gives no formulas; the losses below are this project's.

Features φ(x) = the outputs of the chosen vision-tower layers and, optionally, the projector,
per image token. θ is the student, θ0 the pre-unlearning model (the teacher), p(x) the image
perturbation of the ``perturbation`` group, seeded with the run seed as Vgid's teacher view is:

    L = w_f · D(φ_θ(x_f), φ_θ0(p(x_f))) + w_o · L_out(x_f) + w_r · D(φ_θ(x_r), φ_θ0(x_r))
    D(a, b) = Σ_k c_k · mean_images mean_tokens d(a_k, b_k) / Σ_k c_k

with d the squared error averaged over the feature width (``mse``) or 1 − cosine similarity
(``cosine``), per token; c_k the per-feature weights. L_out is an optional output-level forget
term: ``kl`` = KL(π_θ0(·|p(x_f), q) ‖ π_θ(·|x_f, q)) on the answer tokens (Vgid's forget KL
with a perturbation-only teacher) or ``ga`` = −NLL of the forget answers.

The teacher is the student's own module graph run with the pre-unlearning values of the
trainable parameters (a snapshot taken in :meth:`VKD.prepare`, the size of the trainable
scope, not a second copy of the model): with the LLM frozen that is exactly the reference
model. Feature terms run the vision tower and projector alone, never the language model.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.func import functional_call

from unlearn.data.schema import Sample
from unlearn.data.views import teacher_view
from unlearn.errors import UserError
from unlearn.methods.base import LossOutput, Setup, TermwiseObjective, check_choice
from unlearn.methods.distill import forward_kl, kl_mask, selected
from unlearn.methods.losses import (
    REDUCTIONS,
    batch_mean,
    logits_of,
    masked_reduce,
    model_inputs,
    reduce_nll,
    token_logprobs,
)
from unlearn.methods.saliency import check_aligned, masked_params, trainable
from unlearn.models.modules import (
    captured,
    group_of,
    inner_model,
    model_family,
    module_groups,
    vision_layers,
    vision_layers_in_use,
    vision_projector,
)
from unlearn.models.reference import eval_mode

log = logging.getLogger(__name__)

DISTANCES: tuple[str, ...] = ("mse", "cosine")
OUTPUT_TERMS: tuple[str, ...] = ("kl", "ga")
MASK_TERMS: tuple[str, ...] = ("forget", "all")
Batch = Mapping[str, torch.Tensor]


class ScopeError(UserError, ValueError):
    """A VKD setting that the model or the trainable scope cannot serve."""


# --------------------------------------------------------------------------- features
@dataclass
class Features:
    """Visual features of a batch's images: per feature (the chosen layers, then the
    projector), every image's tokens stacked as (tokens, d), and each image's token count."""

    values: list[torch.Tensor]
    sizes: list[list[int]]

    def per_image(self) -> list[list[torch.Tensor]]:
        """[image][feature] -> (tokens, d)."""
        split = [v.split(s) for v, s in zip(self.values, self.sizes, strict=True)]
        return [list(image) for image in zip(*split, strict=True)]

    @classmethod
    def from_images(cls, images: Sequence[Sequence[torch.Tensor]]) -> Features:
        """Inverse of :meth:`per_image`."""
        by_feature = list(zip(*images, strict=True))
        return cls([torch.cat(f) for f in by_feature],
                   [[t.shape[0] for t in f] for f in by_feature])


def token_distance(student: torch.Tensor, target: torch.Tensor, distance: str) -> torch.Tensor:
    """(tokens,) distances between (tokens, d) features, in fp32: the squared error averaged
    over d (``mse``) or 1 − cosine similarity (``cosine``)."""
    a, b = student.float(), target.float()
    if distance == "mse":
        return (a - b).pow(2).mean(-1)
    if distance == "cosine":
        return 1.0 - torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-8)
    raise ValueError(f"distance={distance!r} is not one of {list(DISTANCES)}")


def feature_distance(student: Features, target: Features, distance: str,
                     weights: Sequence[float]) -> torch.Tensor:
    """Σ_k c_k · mean over images of the mean token distance of feature k, / Σ_k c_k."""
    if student.sizes != target.sizes:
        raise ValueError(f"student and target features differ in shape: {student.sizes} vs "
                         f"{target.sizes}")
    total = None
    for value, goal, sizes, w in zip(student.values, target.values, student.sizes, weights,
                                     strict=True):
        per_token = token_distance(value, goal, distance)
        per_image = torch.stack([chunk.mean() for chunk in per_token.split(sizes)])
        term = w * per_image.mean()
        total = term if total is None else total + term
    return total / float(sum(weights))


def encode_images(model: torch.nn.Module, batch: Batch) -> None:
    """Run the vision tower and the projector on the batch's images as the full model does
    before its language model (LLaVA: the configured feature layer and selection)."""
    inner = inner_model(model)
    if model_family(model) == "llava":
        cfg = inner.config
        inner.model.get_image_features(
            pixel_values=batch["pixel_values"], vision_feature_layer=cfg.vision_feature_layer,
            vision_feature_select_strategy=cfg.vision_feature_select_strategy, return_dict=True)
    else:
        inner.model.get_image_features(batch["pixel_values"], batch["image_grid_thw"])


class _VisualPath(torch.nn.Module):
    """``encode_images`` as a module call, so :func:`functional_call` can swap parameters."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> None:
        encode_images(self.model, batch)


def image_keys(batch: Batch) -> list[str]:
    """One content hash per image of the batch (its pixel tensor, shape and grid)."""
    pixels = batch["pixel_values"].detach()
    grid = batch.get("image_grid_thw")
    chunks = (pixels.split(grid.prod(-1).tolist()) if grid is not None else pixels.unbind(0))
    keys = []
    for i, chunk in enumerate(chunks):
        h = hashlib.sha1(repr((tuple(chunk.shape), str(chunk.dtype),
                               grid[i].tolist() if grid is not None else None)).encode())
        h.update(chunk.contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
        keys.append(h.hexdigest())
    return keys


# --------------------------------------------------------------------------- objective
class VKD(TermwiseObjective):
    """Feature-level forgetting and retention on the visual side (see the module docstring).

    ``layers``: vision-tower layers whose outputs are features, 0-based among the layers that
    reach the projector; negative values count back from the last of them (-1: the layer the
    projector reads, LLaVA's ``vision_feature_layer``). ``projector``: the projector output is
    a feature too. ``feature_weights``: one weight per feature (layers in order, then the
    projector); null = equal. ``cache_teacher``: keep the teacher's features of every fixed
    input (clean retain images; forget images under a deterministic perturbation such as
    ``white``) per distinct image, on the CPU. ``saliency``: mask the gradient with
    MMUnlearner's cached Fisher-ratio mask over the trainable scope (``mask_beta``,
    ``mask_eps``), on the forget terms (``mask_terms: forget``, MMUnlearner's eq. 3) or on
    every term (``all``: masked parameters never move).
    """

    splits = ("forget", "retain")
    needs_reference = False  # the teacher is a snapshot of the trainable parameters

    def __init__(self, layers: Sequence[int] = (-1,), projector: bool = True,
                 distance: str = "mse", feature_weights: Sequence[float] | None = None,
                 forget_weight: float = 1.0, retain_weight: float = 1.0,
                 output_term: str = "kl", output_weight: float = 0.0,
                 reduction: str = "token_mean", perturbation: Mapping[str, Any] | None = None,
                 seed: int = 0, cache_teacher: bool = True, saliency: bool = False,
                 mask_terms: str = "forget", mask_beta: float = 1.0, mask_eps: float = 1e-15):
        self.layers = [int(k) for k in (layers or ())]
        if len(set(self.layers)) != len(self.layers):
            raise ValueError(f"method.objective.layers={self.layers} names a layer twice")
        self.projector = bool(projector)
        n_features = len(self.layers) + self.projector
        if not n_features:
            raise ValueError("VKD needs at least one feature: method.objective.layers is empty "
                             "and method.objective.projector=false")
        self.distance = check_choice("distance", distance, DISTANCES)
        self.output_term = check_choice("output_term", output_term, OUTPUT_TERMS)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.mask_terms = check_choice("mask_terms", mask_terms, MASK_TERMS)
        weights = [1.0] * n_features if feature_weights is None else \
            [float(w) for w in feature_weights]
        if len(weights) != n_features or min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(f"method.objective.feature_weights={weights} must hold "
                             f"{n_features} non-negative numbers (one per layer, then the "
                             "projector), not all zero")
        self.feature_weights = weights
        self.forget_weight, self.retain_weight = float(forget_weight), float(retain_weight)
        self.output_weight = float(output_weight)
        coefficients = (self.forget_weight, self.retain_weight, self.output_weight)
        if min(coefficients) < 0 or max(coefficients) == 0:
            raise ValueError("method.objective.forget_weight, retain_weight and output_weight "
                             f"must be >= 0 and not all 0, got {list(coefficients)}")
        view = teacher_view("none", perturbation, seed)
        if view.image_transform is None:
            raise ValueError("the teacher view equals the student's input: VKD's forget "
                             "target is the teacher's features of the perturbed image; set "
                             "perturbation to something other than none")
        self.views = {"forget": view}
        self.cache_teacher = bool(cache_teacher)
        self.cache_forget = self.cache_teacher and bool(
            getattr(view.image_transform, "deterministic", False))
        self.saliency, self.mask_beta, self.mask_eps = bool(saliency), float(mask_beta), \
            float(mask_eps)
        self.cache: dict[str, list[torch.Tensor]] = {}
        self.teacher_params: dict[str, torch.Tensor] | None = None
        self.masks: dict[str, torch.Tensor] | None = None
        self.feature_layers: list[int] | None = None  # resolved 0-based indices

    # ---- before training
    def select(self, split: str, samples: Sequence[Sample]) -> list[Sample]:
        """Image+text items only: a text-only item has no visual feature, and with the LLM
        frozen its answer does not depend on any trainable parameter."""
        return [s for s in samples if s.modality == "image_text"]

    def resolve_layers(self, model: torch.nn.Module) -> list[int]:
        """``layers`` as 0-based indices of the vision tower, checked against the model."""
        n_used, n_all = vision_layers_in_use(model), len(vision_layers(model))
        resolved = []
        for k in self.layers:
            if not -n_used <= k < n_used:
                raise ScopeError(
                    f"method.objective.layers has {k}: the projector reads vision layers "
                    f"0..{n_used - 1} of {n_all} (allowed {-n_used}..{n_used - 1}; negative "
                    "counts back from the layer the projector reads)")
            resolved.append(k % n_used)
        if len(set(resolved)) != len(resolved):
            raise ScopeError(f"method.objective.layers={self.layers} names a layer twice "
                             f"(0-based: {resolved})")
        return resolved

    def prepare(self, model: torch.nn.Module, sets: Mapping[str, Sequence[Sample]],
                setup: Setup) -> dict[str, Any]:
        """Resolve the layers, check the scope, snapshot the teacher, load the mask."""
        self.feature_layers = self.resolve_layers(model)
        params = trainable(model)
        groups = module_groups(model)
        trained = {group_of(name, groups) for name in params}
        reached = []  # features whose value depends on a trainable parameter
        if "vision" in trained:
            reached = [f"layer {k}" for k in self.feature_layers]
        if self.projector and trained & {"vision", "projector"}:
            reached.append("projector")
        if not reached and not self.output_weight:
            raise ScopeError(
                "VKD trains the visual side, but no chosen feature depends on a trainable "
                f"parameter (trainable groups: {sorted(trained)}); use trainable_modules="
                "vision (the method's default) or add the projector output to the features")
        self.teacher_params = {n: p.detach().clone() for n, p in params.items()}
        self.cache.clear()
        entry: dict[str, Any] = {"vkd": {
            "layers": self.feature_layers, "projector": self.projector,
            "features_with_gradient": reached, "trainable_groups": sorted(trained),
            "teacher": "the model with its pre-unlearning trainable parameters "
                       f"({sum(p.numel() for p in params.values()):,} values copied)",
            "cache_retain": self.cache_teacher, "cache_forget": self.cache_forget,
        }}
        if self.saliency:
            from unlearn.methods.mmunlearner import saliency_mask

            mask, entry["mask"] = saliency_mask(model, sets, setup, beta=self.mask_beta,
                                                eps=self.mask_eps, title="VKD saliency mask")
            self.masks = mask.masks
            entry["mask"]["terms"] = self.mask_terms
        return entry

    # ---- training
    def _on_device(self, tensors: dict[str, torch.Tensor], model: torch.nn.Module
                   ) -> dict[str, torch.Tensor]:
        """``tensors`` (keyed by trainable parameter) moved once to their parameters' devices."""
        params = trainable(model)
        check_aligned(tensors, params)
        for name, p in params.items():
            if tensors[name].device != p.device:
                tensors[name] = tensors[name].to(p.device)
        return tensors

    def _teacher_params(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        if self.teacher_params is None:
            raise RuntimeError("VKD.prepare() must run before training (no teacher snapshot)")
        return self._on_device(self.teacher_params, model)

    def _masks(self, model: torch.nn.Module, term: str) -> dict[str, torch.Tensor] | None:
        """The masks that filter ``term``'s gradient (None: unmasked)."""
        if not self.saliency or (term == "retain" and self.mask_terms == "forget"):
            return None
        if self.masks is None:
            raise RuntimeError("VKD.prepare() must run before training (no saliency mask)")
        return self._on_device(self.masks, model)

    def features(self, model: torch.nn.Module, batch: Batch,
                 params: Mapping[str, torch.Tensor] | None = None) -> Features:
        """The chosen features of the batch's images; ``params`` replace the trainable
        parameters of the same names (teacher values, or mask-filtered aliases)."""
        if self.feature_layers is None:
            self.feature_layers = self.resolve_layers(model)
        blocks = vision_layers(model)
        modules = [blocks[k] for k in self.feature_layers]
        modules += [vision_projector(model)] if self.projector else []
        with captured(modules) as store:
            if params is None:
                encode_images(model, batch)
            else:
                functional_call(_VisualPath(model), {f"model.{n}": t for n, t in params.items()},
                                args=(batch,), tie_weights=True, strict=False)
        return self._as_features(model, batch, store)

    def _as_features(self, model: torch.nn.Module, batch: Batch, outputs: list) -> Features:
        grid = batch.get("image_grid_thw")
        values, sizes = [], []
        for i, out in enumerate(outputs):
            if out.dim() == 3:  # LLaVA: (images, tokens, d)
                values.append(out.reshape(-1, out.shape[-1]))
                sizes.append([out.shape[1]] * out.shape[0])
                continue
            per_image = grid.prod(-1)  # Qwen: every image's patches stacked, (patches, d)
            if self.projector and i == len(outputs) - 1:  # the merger joins m x m patches
                merge = inner_model(model).config.vision_config.spatial_merge_size
                per_image = per_image // merge**2
            values.append(out)
            sizes.append(per_image.tolist())
        return Features(values, sizes)

    def student_features(self, model: torch.nn.Module, batch: Batch, term: str) -> Features:
        masks = self._masks(model, term)
        aliases = masked_params(model, masks) if masks is not None else None
        return self.features(model, batch, aliases)

    @torch.no_grad()
    def teacher_features(self, model: torch.nn.Module, batch: Batch, cache: bool) -> Features:
        """The teacher's features; with ``cache`` computed once per distinct image."""
        with eval_mode(model):
            if not cache:
                return self.features(model, batch, self._teacher_params(model))
            keys = image_keys(batch)
            if any(k not in self.cache for k in keys):
                fresh = self.features(model, batch, self._teacher_params(model))
                for key, image in zip(keys, fresh.per_image(), strict=True):
                    self.cache.setdefault(key, [t.to("cpu", copy=True) for t in image])
        device = batch["pixel_values"].device
        return Features.from_images([[t.to(device) for t in self.cache[k]] for k in keys])

    def output_loss(self, model: torch.nn.Module, forget: Mapping[str, Any]
                    ) -> LossOutput:
        """The output-level forget term (unweighted): KL to the perturbed-image teacher, or
        −NLL of the forget answers."""
        student_batch = forget["student"]
        masks = self._masks(model, "forget")
        if masks is not None:
            aliases = masked_params(model, masks)
            logits = functional_call(model, aliases, args=(), kwargs=model_inputs(student_batch),
                                     tie_weights=True, strict=False).logits
        else:
            logits = logits_of(model, student_batch)
        if self.output_term == "ga":
            logp, mask = token_logprobs(logits, student_batch["labels"])
            nll = batch_mean(reduce_nll(logp, mask, self.reduction))
            return LossOutput(-nll, {"forget_nll": nll.detach()})
        mask = kl_mask(student_batch, "answer")
        teacher_batch = forget["teacher"]
        if not torch.equal(kl_mask(teacher_batch, "answer").sum(1), mask.sum(1)):
            raise ValueError("teacher and student forget batches label different answers")
        with torch.no_grad(), eval_mode(model):
            teacher = functional_call(model, self._teacher_params(model), args=(),
                                      kwargs=model_inputs(teacher_batch), tie_weights=True,
                                      strict=False).logits
        kl = forward_kl(selected(teacher, kl_mask(teacher_batch, "answer")),
                        selected(logits, mask))
        per_position = torch.zeros(mask.shape, dtype=kl.dtype, device=kl.device)
        per_position[mask] = kl
        value = batch_mean(masked_reduce(per_position, mask, self.reduction))
        return LossOutput(value, {"forget_kl": value.detach()})

    def terms(self, model, batch, reference=None) -> Iterator[LossOutput]:
        forget = batch["forget"]
        if self.forget_weight:
            student = self.student_features(model, forget["student"], "forget")
            target = self.teacher_features(model, forget["teacher"], self.cache_forget)
            value = feature_distance(student, target, self.distance, self.feature_weights)
            yield LossOutput(self.forget_weight * value, {"forget_feat": value.detach()})
        if self.output_weight:
            out = self.output_loss(model, forget)
            yield LossOutput(self.output_weight * out.loss, out.parts)
        if self.retain_weight:
            retain = batch["retain"]
            student = self.student_features(model, retain, "retain")
            target = self.teacher_features(model, retain, self.cache_teacher)
            value = feature_distance(student, target, self.distance, self.feature_weights)
            yield LossOutput(self.retain_weight * value, {"retain_feat": value.detach()})
