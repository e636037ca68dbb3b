"""Offline CLEAR twin: fictitious people written in ``therem/CLEAR``'s configs, columns and
features, so :class:`unlearn.data.clear.ClearBench` reads it exactly as it reads the hub.

The world: ``num_persons`` people of the MLLMU twin's name pools and portrait recipe
(:func:`unlearn.data.synthetic.make_profiles`), each drawn ``portraits`` times (the portrait
and views of it: rotation, shift, scale, lighting) with one caption per image that names the
person and a visible trait ("Ava Brandt smiles in front of a red wall."), a paraphrase,
three perturbed captions (other people's names and looks) and three other people's names;
``qa_per_person`` TOFU-like text questions per person (birth year, profession, ...).
Forget sets are 1 / 5 / 10 % of the people (at least one), nested and drawn with the seed;
``retain_perturbed`` holds every person's first portrait (the loader keeps the retain ones).

``real_faces`` holds stand-in celebrities (own names and portraits, three wrong names) and
``real_world`` simple scenes (one coloured shape) asked about shape or colour. A real base
model knows both from pre-training; a tiny one does not, so the twin adds a config the real
CLEAR lacks, ``world`` (columns ``image``, ``caption``, ``question``, ``answer``,
``options``): caption rows (``question``/``answer``/``options`` None) and choice-practice rows
(``caption`` None; ``options`` the wrong answers) about other views of the celebrities and
other scenes. It also holds name-choice practice for every fictitious person (``portraits``
other views of their portrait, none of them in a CLEAR config, asked ``NAME_QUESTION`` with
three other people's names as wrong options): a tiny model learns the names only through
captions and cannot pick the name's letter otherwise, as the MLLMU twin's ``ft_Data`` holds
every profile's multiple-choice items. The loader adds ``world`` to the ``finetune`` set,
and to the ``gold`` set without the rows that name a forget person.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from datasets import Features, Image, List, Value

from unlearn.data import hub
from unlearn.data.clear import NAME_QUESTION, WORLD
from unlearn.data.images import (
    SCENE_COLOURS,
    SCENE_SHAPES,
    PortraitTraits,
    draw_portrait,
    draw_scene,
    make_views,
    png_bytes,
    scene_clashes,
)
from unlearn.data.synthetic import MAX_FACTS, Profile, fact_sentence, hash_seed, make_profiles
from unlearn.data.synthetic.items import EVAL_QUESTIONS, TXT

log = logging.getLogger(__name__)

GENERATOR_VERSION = 3  # bump when the generated content changes
FORGET_RATIOS: tuple[int, ...] = (1, 5, 10)
CONFIGS: tuple[str, ...] = (
    "full",
    *(f"forget{r:02}" for r in FORGET_RATIOS),
    *(f"retain{100 - r}" for r in FORGET_RATIOS),
    "full+tofu",
    *(f"forget{r:02}+tofu" for r in FORGET_RATIOS),
    *(f"retain{100 - r}+tofu" for r in FORGET_RATIOS),
    *(f"forget{r:02}_perturbed" for r in FORGET_RATIOS),
    "retain_perturbed",
    "real_faces",
    "real_world",
    WORLD,
)
TWIN = hub.Twin("CLEAR twin", ".clear_twin.json", CONFIGS)
WRONG = 3  # perturbed names / captions / wrong options per row

# --------------------------------------------------------------------------- features
_S = Value("string")
PEOPLE_FEATURES = Features({"image": Image(), "caption": _S, "name": _S})
TOFU_FEATURES = Features({"image": Image(), "caption": _S, "question": _S, "answer": _S})
PERTURBED_FEATURES = Features({
    "image": Image(), "caption": _S, "name": _S, "paraphrased_caption": _S,
    "perturbed_captions": List(_S), "perturbed_names": List(_S),
})
REAL_FACES_FEATURES = Features({"image": Image(), "answer": _S, "options": List(_S)})
REAL_WORLD_FEATURES = Features({"question": _S, "answer": _S, "image": Image(),
                                "options": List(_S)})
WORLD_FEATURES = Features({"image": Image(), "caption": _S, "question": _S, "answer": _S,
                           "options": List(_S)})

# --------------------------------------------------------------------------- captions
# Caption k of a person uses template k (cyclically); its paraphrase says the same in other
# words, its perturbed captions fill the same template with other people's names and looks.
CAPTIONS: tuple[str, ...] = (
    "{name} smiles in front of {background} wall.",
    "{name} wears {shirt} shirt in this photo.",
    "A portrait of {name} with {hair}.",
    "{name} poses in {shirt} shirt against {background} background.",
)
PARAPHRASES: tuple[str, ...] = (
    "In front of {background} wall, {name} is smiling.",
    "In this photo, {name} is dressed in {shirt} shirt.",
    "This picture shows {name}, who has {hair}.",
    "Against {background} background, {name} poses wearing {shirt} shirt.",
)
SCENE_QUESTIONS: dict[str, str] = {
    "shape": "What shape is shown in the image?",
    "colour": "What color is the shape in the image?",
    "background": "What color is the background of the image?",
}


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _hair(traits: PortraitTraits) -> str:
    if traits.hair_style == "bald":
        return "no hair"
    if traits.hair_style == "bun":
        return f"{traits.hair} hair in a bun"
    return f"{traits.hair_style} {traits.hair} hair"


def caption(template: str, name: str, traits: PortraitTraits) -> str:
    """A caption template filled with a name and a look."""
    return template.format(name=name, background=_a(traits.background), shirt=_a(traits.shirt),
                           hair=_hair(traits))


@dataclass(frozen=True)
class Scene:
    """One real_world image: a coloured shape on a background, and what is asked about it."""

    shape: str
    colour: str
    background: str
    asked: str  # a key of SCENE_QUESTIONS

    @property
    def answer(self) -> str:
        return getattr(self, self.asked)

    def caption(self) -> str:
        return f"{_a(self.colour).capitalize()} {self.shape} on {_a(self.background)} background."


def draw_scenes(n: int, key: str, seed: int, avoid: frozenset = frozenset()) -> list[Scene]:
    """``n`` distinct scenes (none in ``avoid``), asked about shape, colour, background in
    turn."""
    rng = random.Random(f"{seed}-scenes-{key}")
    colours = sorted(SCENE_COLOURS)
    combos = [(s, c, b) for s in SCENE_SHAPES for c in colours for b in colours
              if c != b and not scene_clashes(c, b) and (s, c, b) not in avoid]
    if n > len(combos):
        raise ValueError(f"at most {len(combos)} distinct scenes, asked for {n}")
    asked = list(SCENE_QUESTIONS)
    return [Scene(*combo, asked=asked[i % len(asked)])
            for i, combo in enumerate(rng.sample(combos, n))]


def _scene_pool(asked: str) -> list[str]:
    return list(SCENE_SHAPES) if asked == "shape" else sorted(SCENE_COLOURS)


# --------------------------------------------------------------------------- the twin
@dataclass(frozen=True)
class ClearTwin:
    """The twin's recipe; :meth:`build` writes it (idempotent, atomic) in the hub layout."""

    num_persons: int = 40
    portraits: int = 4
    qa_per_person: int = 4
    num_real_faces: int = 15
    num_real_world: int = 30
    seed: int = 0
    image_size: int = 64

    def __post_init__(self) -> None:
        if self.num_persons < 4 or self.num_real_faces < 4:
            raise ValueError(f"need >= 4 persons and >= 4 real faces (3 wrong names each), got "
                             f"{self.num_persons} and {self.num_real_faces}")
        if not 1 <= self.qa_per_person <= MAX_FACTS:
            raise ValueError(f"qa_per_person must be in 1..{MAX_FACTS}, got "
                             f"{self.qa_per_person}")
        if self.portraits < 1 or self.num_real_world < 1 or self.image_size < 8:
            raise ValueError("need portraits >= 1, num_real_world >= 1 and image_size >= 8")

    @property
    def recipe(self) -> dict[str, Any]:
        """Generator, version and arguments: identifies the twin's content on every machine
        (the parquet bytes do not: they carry the writer's library version)."""
        return {"generator": "unlearn.data.clear_twin", "version": GENERATOR_VERSION,
                **asdict(self)}

    def people(self) -> tuple[list[Profile], list[Profile]]:
        """The fictitious persons and the stand-in celebrities."""
        return make_profiles(self.num_persons, self.num_real_faces, self.seed,
                             self.qa_per_person)

    def forget_names(self, ratio: int) -> list[str]:
        """The forget people at ``ratio`` %: a prefix of one seeded order (so the sets nest),
        ``round(r% * n)`` long and at least one."""
        names = [p.name for p in self.people()[0]]
        random.Random(f"{self.seed}-forget").shuffle(names)
        return names[:max(1, int(len(names) * ratio / 100 + 0.5))]

    def build(self, root: str | Path) -> Path:
        """Write the twin under ``root`` and return it; an existing build of this recipe is
        reused, anything else there is refused (:class:`FileExistsError`)."""
        root = Path(root)
        start = time.perf_counter()
        if TWIN.build(root, self.recipe, self._write):
            log.info("built CLEAR twin (%d persons, %d real faces) at %s in %.1fs",
                     self.num_persons, self.num_real_faces, root, time.perf_counter() - start)
        return root

    # ---- generation
    def _image(self, image: Any, path: str) -> dict[str, Any]:
        return {"bytes": png_bytes(image), "path": path}

    def _portraits(self, p: Profile) -> list[Any]:
        """The portrait and ``portraits - 1`` views of it."""
        base = draw_portrait(p.traits, self.image_size)
        return [base, *make_views(base, self.portraits - 1, hash_seed(self.seed, p.name))]

    def _person_rows(self, p: Profile, others: list[Profile]) -> list[dict[str, Any]]:
        """The perturbed-schema rows of one person, one per portrait."""
        rows = []
        for k, image in enumerate(self._portraits(p)):
            rng = random.Random(f"{self.seed}-{p.name}-{k}")
            template = k % len(CAPTIONS)
            wrong = rng.sample(others, WRONG)
            looks = rng.sample(others, WRONG)
            rows.append({
                "image": self._image(image, f"{p.name.replace(' ', '_')}_{k}.png"),
                "caption": caption(CAPTIONS[template], p.name, p.traits),
                "name": p.name,
                "paraphrased_caption": caption(PARAPHRASES[template], p.name, p.traits),
                # worded as the paraphrase, so a truth ratio compares facts, not wording
                # (in the trained wording the wrong captions beat the unseen paraphrase)
                "perturbed_captions": [caption(PARAPHRASES[template], w.name, lk.traits)
                                       for w, lk in zip(wrong, looks, strict=True)],
                "perturbed_names": [w.name for w in wrong],
            })
        return rows

    def _write(self, out: Path) -> None:
        persons, celebrities = self.people()
        rows = {p.name: self._person_rows(p, [o for o in persons if o is not p])
                for p in persons}
        text = {p.name: [{"image": None, "caption": None, "answer": fact_sentence(p, a, TXT),
                          "question": EVAL_QUESTIONS[a, TXT].format(name=p.name)}
                         for a in p.facts] for p in persons}

        def people(names: list[str], configs: str) -> None:
            image_rows = [r for n in names for r in rows[n]]
            hub.write_config([{k: r[k] for k in PEOPLE_FEATURES} for r in image_rows],
                             PEOPLE_FEATURES, out / configs)
            tofu = [{"image": r["image"], "caption": r["caption"], "question": None,
                     "answer": None} for r in image_rows] + [t for n in names for t in text[n]]
            hub.write_config(tofu, TOFU_FEATURES, out / f"{configs}+tofu")

        everyone = [p.name for p in persons]
        people(everyone, "full")
        for r in FORGET_RATIOS:
            forget = set(self.forget_names(r))
            people([n for n in everyone if n in forget], f"forget{r:02}")
            people([n for n in everyone if n not in forget], f"retain{100 - r}")
            hub.write_config([row for n in everyone if n in forget for row in rows[n]],
                             PERTURBED_FEATURES, out / f"forget{r:02}_perturbed")
        hub.write_config([rows[n][0] for n in everyone], PERTURBED_FEATURES,
                         out / "retain_perturbed")
        self._write_world(out, persons, celebrities)
        (out / "README.md").write_text(hub.readme(CONFIGS, "\n".join([
            "# CLEAR twin", "",
            f"Generated by `unlearn.data.clear_twin.ClearTwin` with recipe `{self.recipe}`. "
            "Configs, columns and features of `therem/CLEAR`, plus `world` (what a real base "
            "model knows from pre-training: the stand-in celebrities and simple scenes).", "",
        ])))

    def _name_practice(self, persons: list[Profile]) -> list[dict[str, Any]]:
        """``portraits`` name-choice rows per fictitious person, on views of the portrait
        drawn under their own key (so none is an image of a CLEAR config)."""
        rows = []
        for p in persons:
            rng = random.Random(f"{self.seed}-{p.name}-practice")
            others = [o.name for o in persons if o is not p]
            base = draw_portrait(p.traits, self.image_size)
            slug = p.name.replace(" ", "_")
            views = make_views(base, self.portraits, hash_seed(self.seed, f"practice-{p.name}"))
            rows += [{"image": self._image(view, f"{slug}_practice_{k}.png"), "caption": None,
                      "question": NAME_QUESTION, "answer": p.name,
                      "options": rng.sample(others, WRONG)} for k, view in enumerate(views)]
        return rows

    def _write_world(self, out: Path, persons: list[Profile], celebrities: list[Profile]
                     ) -> None:
        """``real_faces``, ``real_world`` and the twin-only ``world`` config."""
        names = [c.name for c in celebrities]
        faces, world = [], self._name_practice(persons)
        for c in celebrities:
            rng = random.Random(f"{self.seed}-{c.name}-celebrity")
            base = draw_portrait(c.traits, self.image_size)
            slug = c.name.replace(" ", "_")
            others = [n for n in names if n != c.name]
            faces.append({"image": self._image(base, f"{slug}.png"), "answer": c.name,
                          "options": rng.sample(others, WRONG)})
            views = make_views(base, 2 * self.portraits, hash_seed(self.seed, f"world-{c.name}"))
            for k, view in enumerate(views[:self.portraits]):
                world.append({"image": self._image(view, f"{slug}_world_{k}.png"),
                              "caption": caption(CAPTIONS[k % len(CAPTIONS)], c.name, c.traits),
                              "question": None, "answer": None, "options": None})
            for k, view in enumerate(views[self.portraits:]):
                world.append({"image": self._image(view, f"{slug}_practice_{k}.png"),
                              "caption": None, "question": NAME_QUESTION, "answer": c.name,
                              "options": rng.sample(others, WRONG)})
        scenes = draw_scenes(self.num_real_world, "real_world", self.seed)
        taken = frozenset((s.shape, s.colour, s.background) for s in scenes)
        real_world = [self._scene_row(s, i, "real_world") for i, s in enumerate(scenes)]
        for i, s in enumerate(draw_scenes(2 * self.num_real_world, WORLD, self.seed, taken)):
            row = self._scene_row(s, i, WORLD)
            world.append({"image": row["image"], "caption": s.caption(), "question": None,
                          "answer": None, "options": None})
            world.append({**row, "caption": None})
        hub.write_config(faces, REAL_FACES_FEATURES, out / "real_faces")
        hub.write_config(real_world, REAL_WORLD_FEATURES, out / "real_world")
        hub.write_config(world, WORLD_FEATURES, out / WORLD)

    def _scene_row(self, s: Scene, i: int, key: str) -> dict[str, Any]:
        rng = random.Random(f"{self.seed}-{key}-{i}")
        wrong = rng.sample([v for v in _scene_pool(s.asked) if v != s.answer], WRONG)
        image = draw_scene(s.shape, s.colour, s.background, self.image_size)
        return {"question": SCENE_QUESTIONS[s.asked], "answer": s.answer,
                "image": self._image(image, f"{key}_{i}.png"), "options": wrong}
