"""Image helpers: decode any stored image form, draw synthetic portraits and scenes, make views.

Benchmarks store images as ``{"bytes", "path"}`` dicts (parquet), decoded PIL images
(``datasets`` with decoding on), raw bytes or file paths; :func:`to_pil` accepts all of them
so loaders never care which one they got.

The synthetic twin needs faces a tiny vision tower can tell apart: each portrait is drawn
from a :class:`PortraitTraits` record whose large colour areas (background, shirt) are unique
per profile, so identity is visible even at 64 px.
"""

from __future__ import annotations

import io
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageEnhance

Colour = tuple[int, int, int]

BACKGROUNDS: dict[str, Colour] = {
    "red": (205, 45, 45),
    "orange": (240, 140, 30),
    "yellow": (245, 220, 60),
    "lime": (150, 220, 60),
    "green": (40, 150, 70),
    "teal": (30, 150, 150),
    "cyan": (90, 220, 235),
    "sky blue": (120, 170, 240),
    "navy": (25, 40, 120),
    "purple": (120, 50, 170),
    "pink": (240, 130, 190),
    "maroon": (110, 25, 45),
    "grey": (128, 128, 128),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
    "olive": (120, 120, 30),
}
SHIRTS: dict[str, Colour] = {
    "white": (250, 250, 250),
    "black": (15, 15, 15),
    "red": (220, 30, 40),
    "blue": (30, 80, 220),
    "green": (30, 170, 60),
    "yellow": (250, 210, 20),
    "purple": (150, 60, 200),
    "orange": (250, 120, 20),
    "brown": (120, 70, 30),
    "pink": (250, 150, 200),
}
SKINS: dict[str, Colour] = {
    "pale": (250, 225, 205),
    "light": (235, 195, 160),
    "tan": (205, 155, 110),
    "brown": (150, 100, 65),
    "dark": (95, 60, 40),
}
HAIRS: dict[str, Colour] = {
    "black": (25, 20, 20),
    "brown": (100, 60, 25),
    "blond": (235, 205, 110),
    "red": (190, 70, 25),
    "grey": (170, 170, 170),
    "blue": (40, 90, 230),
    "green": (40, 200, 90),
    "white": (250, 250, 250),
}
EYES: dict[str, Colour] = {
    "brown": (90, 50, 20),
    "blue": (40, 110, 220),
    "green": (40, 150, 60),
    "grey": (110, 110, 120),
}
HEAD_SHAPES: tuple[str, ...] = ("round", "oval", "square")
HAIR_STYLES: tuple[str, ...] = ("short", "long", "spiky", "bald", "bun")
ACCESSORIES: tuple[str, ...] = ("none", "glasses", "hat", "earrings", "bow tie")


@dataclass(frozen=True)
class PortraitTraits:
    """What a synthetic face looks like; every field is a key of the palettes above."""

    background: str
    shirt: str
    skin: str
    hair: str
    hair_style: str
    eyes: str
    head_shape: str
    accessory: str

    def describe(self) -> str:
        """Plain-English description, used as the biography's appearance answer."""
        hair = "no hair" if self.hair_style == "bald" else f"{self.hair_style} {self.hair} hair"
        extra = "" if self.accessory == "none" else f", wearing {_with_article(self.accessory)}"
        return (
            f"A person with {self.skin} skin, {hair}, {self.eyes} eyes and "
            f"{_with_article(self.head_shape)} face in {_with_article(self.shirt)} shirt{extra}, "
            f"in front of {_with_article(self.background)} background."
        )


def _with_article(noun: str) -> str:
    """``glasses`` and ``earrings`` are plural, the rest take a/an."""
    if noun.endswith("s"):
        return noun
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def sample_traits(rng: random.Random) -> PortraitTraits:
    """Draw one random look; callers enforce uniqueness (see :func:`unique_traits`)."""
    return PortraitTraits(
        background=rng.choice(sorted(BACKGROUNDS)),
        shirt=rng.choice(sorted(SHIRTS)),
        skin=rng.choice(sorted(SKINS)),
        hair=rng.choice(sorted(HAIRS)),
        hair_style=rng.choice(HAIR_STYLES),
        eyes=rng.choice(sorted(EYES)),
        head_shape=rng.choice(HEAD_SHAPES),
        accessory=rng.choice(ACCESSORIES),
    )


def unique_traits(n: int, rng: random.Random) -> list[PortraitTraits]:
    """``n`` looks with pairwise distinct (background, shirt) so faces differ in large areas.

    When ``n`` exceeds the number of such pairs the constraint relaxes to distinct
    (background, shirt, hair) triples.
    """
    # only pairs whose shirt stands out from the background are ever drawn
    pairs = sum(not _colours_clash(BACKGROUNDS[b], SHIRTS[s]) for b in BACKGROUNDS for s in SHIRTS)
    key_len = 2 if n <= pairs else 3
    if n > pairs * len(HAIRS):
        raise ValueError(f"cannot draw {n} distinct portraits (max {pairs * len(HAIRS)})")
    seen: set[tuple[str, ...]] = set()
    out: list[PortraitTraits] = []
    while len(out) < n:
        traits = sample_traits(rng)
        key = (traits.background, traits.shirt, traits.hair)[:key_len]
        if key in seen or _clashes(traits):
            continue
        seen.add(key)
        out.append(traits)
    return out


def _clashes(traits: PortraitTraits) -> bool:
    """Reject looks whose shirt blends into the background (they would look alike)."""
    return _colours_clash(BACKGROUNDS[traits.background], SHIRTS[traits.shirt])


def _colours_clash(background: Colour, shirt: Colour) -> bool:
    return sum(abs(a - b) for a, b in zip(background, shirt, strict=True)) < 90


def draw_portrait(traits: PortraitTraits, size: int = 64) -> Image.Image:
    """Render ``traits`` as an RGB ``size`` x ``size`` cartoon face (drawn at 4x, then shrunk)."""
    s = 256
    img = Image.new("RGB", (s, s), BACKGROUNDS[traits.background])
    d = ImageDraw.Draw(img)
    skin, hair, shirt = SKINS[traits.skin], HAIRS[traits.hair], SHIRTS[traits.shirt]
    # shoulders / shirt
    d.ellipse((28, 190, 228, 330), fill=shirt)
    d.rectangle((108, 170, 148, 200), fill=skin)  # neck
    head = (68, 52, 188, 182) if traits.head_shape != "oval" else (80, 44, 176, 188)
    if traits.hair_style == "long":
        d.rectangle((58, 70, 198, 210), fill=hair)
    if traits.head_shape == "square":
        d.rounded_rectangle(head, radius=18, fill=skin)
    else:
        d.ellipse(head, fill=skin)
    _draw_hair(d, traits.hair_style, hair, head)
    # eyes
    eye = EYES[traits.eyes]
    for cx in (104, 152):
        d.ellipse((cx - 14, 100, cx + 14, 122), fill=(255, 255, 255))
        d.ellipse((cx - 7, 104, cx + 7, 118), fill=eye)
    d.arc((104, 130, 152, 160), start=20, end=160, fill=(120, 30, 30), width=5)  # mouth
    _draw_accessory(d, traits.accessory)
    return img.resize((size, size), Image.Resampling.LANCZOS)


def _draw_hair(d: ImageDraw.ImageDraw, style: str, colour: Colour, head: tuple) -> None:
    """Hair sits on top of the head box; ``long`` hair was drawn behind the head already."""
    x0, y0, x1, _ = head
    if style in ("short", "long"):
        d.chord((x0 - 4, y0 - 10, x1 + 4, y0 + 70), start=180, end=360, fill=colour)
    elif style == "spiky":
        step = (x1 - x0) // 5
        for i in range(5):
            a = x0 + i * step
            d.polygon([(a, y0 + 24), (a + step // 2, y0 - 26), (a + step, y0 + 24)], fill=colour)
    elif style == "bun":
        d.chord((x0 - 4, y0 - 6, x1 + 4, y0 + 60), start=180, end=360, fill=colour)
        mid = (x0 + x1) // 2
        d.ellipse((mid - 24, y0 - 40, mid + 24, y0 + 4), fill=colour)


def _draw_accessory(d: ImageDraw.ImageDraw, accessory: str) -> None:
    """Accessories add a little per-face detail on top of the colour scheme."""
    if accessory == "glasses":
        for cx in (104, 152):
            d.ellipse((cx - 20, 94, cx + 20, 128), outline=(10, 10, 10), width=5)
        d.line((124, 110, 132, 110), fill=(10, 10, 10), width=5)
    elif accessory == "hat":
        d.rectangle((50, 40, 206, 56), fill=(60, 40, 20))
        d.rectangle((84, 0, 172, 44), fill=(60, 40, 20))
    elif accessory == "earrings":
        for cx in (66, 190):
            d.ellipse((cx - 9, 140, cx + 9, 158), fill=(250, 200, 0))
    elif accessory == "bow tie":
        d.polygon([(128, 200), (98, 186), (98, 214)], fill=(200, 0, 30))
        d.polygon([(128, 200), (158, 186), (158, 214)], fill=(200, 0, 30))


def make_views(image: Image.Image, n: int, seed: int) -> list[Image.Image]:
    """``n`` recognisable variants of ``image`` (as Test_Set's pose/lighting changes).

    Each view gets a small rotation (+-10 deg), shift (+-6% of the side), scale (0.9-1.1)
    and brightness/contrast jitter (+-15%), from ``random.Random(seed)``; borders are filled
    with the corner colour so the background stays uniform.
    """
    rng = random.Random(seed)
    base = image.convert("RGB")
    w, h = base.size
    fill = base.getpixel((0, 0))
    views = []
    for _ in range(n):
        angle = rng.uniform(-10.0, 10.0)
        scale = rng.uniform(0.9, 1.1)
        dx, dy = (rng.uniform(-0.06, 0.06) * w, rng.uniform(-0.06, 0.06) * h)
        view = base.rotate(
            angle,
            resample=Image.Resampling.BICUBIC,
            translate=(dx, dy),
            fillcolor=fill,
        )
        if abs(scale - 1.0) > 1e-6:
            sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
            scaled = view.resize((sw, sh), Image.Resampling.BICUBIC)
            canvas = Image.new("RGB", (w, h), fill)
            canvas.paste(scaled, ((w - sw) // 2, (h - sh) // 2))
            view = canvas
        view = ImageEnhance.Brightness(view).enhance(rng.uniform(0.85, 1.15))
        view = ImageEnhance.Contrast(view).enhance(rng.uniform(0.85, 1.15))
        views.append(view)
    return views


def png_bytes(image: Image.Image) -> bytes:
    """Deterministic PNG encoding (no timestamps), so rebuilt datasets are byte-identical."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def to_pil(value: Any) -> Image.Image:
    """Decode a stored image (PIL, ``{"bytes", "path"}`` dict, bytes, path) to an RGB PIL image.

    Dicts prefer ``bytes`` and fall back to ``path``; either may be ``None``.
    """
    if isinstance(value, Image.Image):
        return value if value.mode == "RGB" else value.convert("RGB")
    if isinstance(value, Mapping):
        data, path = value.get("bytes"), value.get("path")
        if data is not None:
            return to_pil(bytes(data))
        if path is not None:
            return to_pil(path)
        raise ValueError("image dict has neither 'bytes' nor 'path'")
    if isinstance(value, (bytes, bytearray, memoryview)):
        with Image.open(io.BytesIO(bytes(value))) as img:
            return img.convert("RGB")
    if isinstance(value, (str, Path)):
        with Image.open(value) as img:
            return img.convert("RGB")
    raise TypeError(f"cannot turn {type(value).__name__} into an image")


# --------------------------------------------------------------------------- scenes
SCENE_SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
SCENE_COLOURS: dict[str, Colour] = SHIRTS  # ten plain, well separated colour names


def scene_clashes(colour: str, background: str) -> bool:
    """A shape that blends into its background cannot be asked about."""
    return _colours_clash(SCENE_COLOURS[background], SCENE_COLOURS[colour])


def draw_scene(shape: str, colour: str, background: str, size: int = 64) -> Image.Image:
    """One large ``colour`` ``shape`` on a plain ``background`` (CLEAR twin's real_world VQA:
    questions a model answers from the image alone); drawn at 4x, then shrunk."""
    s = 256
    img = Image.new("RGB", (s, s), SCENE_COLOURS[background])
    d = ImageDraw.Draw(img)
    fill = SCENE_COLOURS[colour]
    lo, hi, mid = 48, 208, 128
    if shape == "circle":
        d.ellipse((lo, lo, hi, hi), fill=fill)
    elif shape == "square":
        d.rectangle((lo + 10, lo + 10, hi - 10, hi - 10), fill=fill)
    elif shape == "triangle":
        d.polygon([(mid, lo), (hi, hi), (lo, hi)], fill=fill)
    elif shape == "diamond":
        d.polygon([(mid, lo - 10), (hi + 10, mid), (mid, hi + 10), (lo - 10, mid)], fill=fill)
    elif shape == "cross":
        d.rectangle((mid - 28, lo, mid + 28, hi), fill=fill)
        d.rectangle((lo, mid - 28, hi, mid + 28), fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r} (shapes: {list(SCENE_SHAPES)})")
    return img.resize((size, size), Image.Resampling.LANCZOS)
