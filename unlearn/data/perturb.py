"""Visual perturbations for teacher views (Vgid): PIL image in, PIL image out, seeded.

They act on the image in [0, 1] pixel space before the processor normalises it, so every
model family sees the same perturbation. Results are stored as 8-bit images (what processors
take), which adds at most 1/510 of rounding to a pixel. Each perturbation owns a seeded
generator and draws fresh noise per call, as the official code draws new noise per step; the
same seed and call order give the same images.

Vgid's released code instead replaces the *normalised* pixel tensor by U[0, 1) noise
(docs/fidelity.md §9); ``random_noise`` here is a uniform noise image in pixel space.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image

PERTURBATIONS: tuple[str, ...] = ("none", "gaussian", "random_noise", "white")


def _to_unit(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0


def _to_image(unit: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(unit, 0.0, 1.0) * 255.0).astype(np.uint8), "RGB")


class GaussianNoise:
    """Additive N(0, sigma^2) noise per pixel and channel, then clipped to [0, 1]."""

    deterministic = False  # fresh noise per call

    def __init__(self, sigma: float, seed: int = 0):
        if sigma <= 0:
            raise ValueError(f"perturbation.sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)
        self.rng = np.random.default_rng(seed)

    def noisy(self, image: Image.Image) -> np.ndarray:
        """The image plus noise in [0, 1] pixel space, before clipping."""
        unit = _to_unit(image)
        return unit + self.rng.normal(0.0, self.sigma, unit.shape)

    def __call__(self, image: Image.Image) -> Image.Image:
        return _to_image(self.noisy(image))


class RandomNoise:
    """The image replaced by uniform noise of the same size (independent of its content)."""

    deterministic = False

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        pixels = self.rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        return Image.fromarray(pixels, "RGB")


class White:
    """The image replaced by a plain white one of the same size (all ones in [0, 1])."""

    deterministic = True  # the same image for the same input: its encodings can be cached

    def __call__(self, image: Image.Image) -> Image.Image:
        return Image.new("RGB", image.size, (255, 255, 255))


def build_perturbation(cfg: Mapping[str, Any] | None, seed: int = 0) -> Any:
    """A ``perturbation`` config node (name, sigma) -> a PIL -> PIL callable, or None."""
    name = (cfg or {}).get("name", "none")
    if name == "none":
        return None
    if name == "gaussian":
        return GaussianNoise(float(cfg["sigma"]), seed)
    if name == "random_noise":
        return RandomNoise(seed)
    if name == "white":
        return White()
    raise ValueError(f"perturbation.name={name!r} is not one of {list(PERTURBATIONS)}")
