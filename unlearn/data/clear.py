"""CLEAR loader (``therem/CLEAR``): one code path for the hub benchmark, a local copy and the
offline twin (:mod:`unlearn.data.clear_twin`).

CLEAR's schema drifted between revisions (``name``/``perturbed_names`` were added to the
perturbed configs later, ``real_world`` moved from split ``test`` to ``train`` and lost its
``prompt`` column), so every config's columns are checked against the column sets of the
revisions we know and anything else is refused rather than guessed at.

Tasks: the face-name multiple choice MMUnlearner's ``CLEAR_eval.py`` asks (``choice``: the
row's wrong names with the true one inserted at a seeded position), caption VQA under one of
the official caption questions (``qa``, with the paraphrase and perturbed captions the
likelihood metrics need) and TOFU's text QA (``qa``, text only).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import datasets

from unlearn.data.benchmark import TRAIN_SETS, HubBenchmark
from unlearn.data.hub import (
    LazyImage,
    MissingSplitError,
    is_local,
    iter_rows,
    load_config,
    source_fingerprint,
)
from unlearn.data.schema import Sample
from unlearn.errors import UserError

log = logging.getLogger(__name__)

HUB_ID = "therem/CLEAR"
NAME_QUESTION = "What is the name of the person in the image?"  # MMUnlearner CLEAR_eval.py
# CLEAR's caption questions, verbatim from the official code (somvy/multimodal_unlearning
# mm/dataset.py), including the missing full stop of the second one.
IMAGE_CAPTION_QUESTIONS: tuple[str, ...] = (
    "What can you see in this picture?",
    "Tell me about the content of this image",
    "Can you give a description of the image?",
    "What is depicted in the image?",
    "Explain what you observe in the picture.",
    "Describe the image in detail.",
    "What is the main subject of this image?",
    "Can you describe the scene or objects in the image?",
    "What is happening in this image?",
)
WORLD = "world"  # twin-only config: what a real base model knows from pre-training

# Column sets of the known revisions, per config kind (benchmarks.md §2.1, pitfall 11).
_PEOPLE = frozenset({"image", "caption", "name"})
_PERTURBED = frozenset({"image", "caption", "paraphrased_caption", "perturbed_captions"})
KNOWN_COLUMNS: dict[str, tuple[frozenset[str], ...]] = {
    "people": (_PEOPLE,),
    "tofu": (frozenset({"image", "caption", "question", "answer"}),),
    "perturbed": (_PERTURBED | {"name", "perturbed_names"}, _PERTURBED | {"name"}, _PERTURBED),
    "real_faces": (frozenset({"image", "answer", "options"}),),
    "real_world": (frozenset({"question", "answer", "image", "options"}),
                   frozenset({"question", "answer", "image", "options", "prompt"})),
    WORLD: (frozenset({"image", "caption", "question", "answer", "options"}),),
}


def config_kind(config: str) -> str:
    """Which :data:`KNOWN_COLUMNS` entry a config name falls under."""
    if config.endswith("_perturbed"):
        return "perturbed"
    if config.endswith("+tofu"):
        return "tofu"
    if config in ("real_faces", "real_world", WORLD):
        return config
    return "people"  # full, forgetNN, retainNN


def check_columns(ds: datasets.Dataset, config: str) -> None:
    """Refuse a config whose columns match no known CLEAR revision."""
    known = KNOWN_COLUMNS[config_kind(config)]
    if frozenset(ds.column_names) not in known:
        raise UserError(f"CLEAR config {config!r} has columns {sorted(ds.column_names)}, which "
                        f"match no known revision (expected one of "
                        f"{[sorted(k) for k in known]})")


def choice_options(truth: str, others: Sequence[str], rng: random.Random
                   ) -> tuple[dict[str, str], str]:
    """MMUnlearner's name MCQ: ``others`` in their order with ``truth`` inserted at
    ``rng.randint(0, len(others))`` (a copy of the truth among them is dropped first).
    Returns the options keyed ``A``, ``B``, ... and the truth's letter."""
    options = [str(o) for o in others if o != truth]
    position = rng.randint(0, len(options))
    options.insert(position, truth)
    letters = [chr(ord("A") + i) for i in range(len(options))]
    return dict(zip(letters, options, strict=True)), letters[position]


def row_rng(seed: int, config: str, row: int) -> random.Random:
    """One generator per row (option position, then caption question): reproducible and
    independent of which other rows are read."""
    return random.Random(f"{seed}-{config}-{row}")


def _image_key(value: Any) -> str | None:
    """Digest of a stored image's bytes (its path when there are none), to join rows."""
    if isinstance(value, Mapping):
        data = value.get("bytes")
        return hashlib.sha1(data).hexdigest() if data is not None else value.get("path")
    return None


def _named_in(text: str, people: Sequence[str]) -> str | None:
    """The longest of ``people`` whose name occurs in ``text``."""
    hits = [p for p in people if p and p in text]
    return max(hits, key=len) if hits else None


@dataclass
class ClearBench(HubBenchmark):
    """CLEAR at one forget ratio: people, evaluation splits and training sets as Samples.

    ``source`` is a hub id (``therem/CLEAR``) or a local folder in the hub layout (a real copy
    or the twin). Eval splits: ``forget`` (name MCQ + caption QA of ``forgetNN_perturbed``,
    text QA of ``forgetNN+tofu``), ``retain`` (the same from ``retain_perturbed``, restricted
    to the retain people, and the text QA of ``retain{100-NN}+tofu`` sampled with the seed to
    at most as many as the forget split has), ``real_faces`` and ``real_world`` (MCQ).
    """

    forget_ratios: ClassVar[tuple[int, ...]] = (1, 5, 10)
    eval_split_names: ClassVar[tuple[str, ...]] = ("forget", "retain", "real_faces",
                                                   "real_world")
    forget_split: ClassVar[str] = "forget"

    source: str = HUB_ID
    forget_ratio: int = 10
    _owners: dict[tuple[str, str], str | None] | None = field(init=False, default=None,
                                                              repr=False)

    # ---- config names
    @property
    def forget_config(self) -> str:
        return f"forget{self.forget_ratio:02}"

    @property
    def retain_config(self) -> str:
        return f"retain{100 - self.forget_ratio}"

    @property
    def has_world(self) -> bool:
        """The twin's ``world`` config (absent from the real CLEAR) is in the source."""
        return is_local(self.source) and (Path(self.source).expanduser() / WORLD).is_dir()

    def _world(self) -> tuple[str, ...]:
        return (WORLD,) if self.has_world else ()

    def configs(self, part: str) -> tuple[str, ...]:
        """The configs behind a fingerprint part: ``finetune``, ``gold`` or ``eval`` (all)."""
        forget, retain = self.forget_config, self.retain_config
        parts = {
            "finetune": ("full+tofu", *self._world()),
            "gold": (f"{retain}+tofu", *self._world()),
            "eval": (forget, retain, f"{forget}+tofu", f"{retain}+tofu", f"{forget}_perturbed",
                     "retain_perturbed", "real_faces", "real_world", "full+tofu",
                     *self._world()),
        }
        if part not in parts:
            raise ValueError(f"no fingerprint part {part!r} (parts: {list(parts)})")
        return parts[part]

    # ---- reading
    def load(self, config: str) -> datasets.Dataset:
        """One config (split ``train``; ``real_world`` falls back to the old ``test``),
        checked against the known column sets."""
        load = {"cache_dir": self.cache_dir, "revision": self.revision}
        try:
            ds = load_config(self.source, config, **load)
        except MissingSplitError:
            if config != "real_world":
                raise
            ds = load_config(self.source, config, split="test", **load)
        check_columns(ds, config)
        return ds

    def people(self, config: str) -> list[str]:
        """The distinct names a config lists, sorted."""
        column = self.dataset(config).select_columns(["name"]).with_format("arrow")["name"]
        return sorted({str(n) for n in column.to_pylist() if n is not None})

    def _owner_index(self) -> dict[tuple[str, str], str | None]:
        """Image digest / caption -> name over the forget and retain configs (None marks a
        caption that several people share), to name rows of revisions without ``name``."""
        if self._owners is None:
            index: dict[tuple[str, str], str | None] = {}
            for config in (self.forget_config, self.retain_config):
                for row in iter_rows(self.dataset(config)):
                    key = _image_key(row["image"])
                    if key is not None:
                        index[("image", key)] = row["name"]
                    caption, name = ("caption", row["caption"]), row["name"]
                    index[caption] = name if index.get(caption, name) == name else None
            self._owners = index
        return self._owners

    def _owner(self, row: Mapping[str, Any], people: Sequence[str]) -> str | None:
        """Whose row this is: its ``name``, else the forget/retain row with the same image or
        caption, else the one of ``people`` named in its text; None when nothing tells."""
        if row.get("name"):
            return str(row["name"])
        index = self._owner_index()
        key = _image_key(row.get("image"))
        name = index.get(("image", key)) if key is not None else None
        if name is None and row.get("caption") is not None:
            name = index.get(("caption", row["caption"]))
        if name is None:
            text = " ".join(str(row.get(c) or "") for c in ("caption", "question", "answer"))
            name = _named_in(text, people)
        return name

    # ---- samples
    def _perturbed(self, config: str, keep: Sequence[str], split: str) -> list[Sample]:
        """Name MCQ + caption QA for every row of a ``*_perturbed`` config whose person is in
        ``keep``; missing ``perturbed_names`` are drawn (3, seeded) from the other people."""
        wanted, everyone = set(keep), self.forget_ids + self.retain_ids
        out: list[Sample] = []
        dropped = 0
        for i, row in enumerate(iter_rows(self.dataset(config))):
            name = self._owner(row, everyone)
            if name is None:
                raise UserError(f"{config} row {i} has no 'name' and neither its image nor its "
                                f"caption matches a row of {self.forget_config} or "
                                f"{self.retain_config}: cannot tell whose it is")
            if name not in wanted:
                dropped += 1
                continue
            wrong = row.get("perturbed_names")
            if wrong is None:
                pool = [p for p in everyone if p != name]
                wrong = random.Random(f"{self.seed}-{config}-{i}-names").sample(
                    pool, min(3, len(pool)))
            rng = row_rng(self.seed, config, i)
            options, letter = choice_options(name, wrong, rng)
            image = LazyImage(row["image"], f"{config} row {i}").get()
            out.append(Sample(name, NAME_QUESTION, letter, "choice", "image_text", split, image,
                              options))
            meta = {"paraphrase": row["paraphrased_caption"],
                    "perturbed": [str(c) for c in row["perturbed_captions"] or []]}
            out.append(Sample(name, rng.choice(IMAGE_CAPTION_QUESTIONS), str(row["caption"]),
                              "qa", "image_text", split, image, meta=meta))
        if dropped:
            log.info("%s: %d rows of people outside %s skipped", config, dropped, split)
        return out

    def _tofu(self, config: str, people: Sequence[str], split: str, *, captions: bool
              ) -> list[Sample]:
        """A ``+tofu`` config as ``qa`` Samples: text rows (``image`` None) are TOFU's text QA,
        image rows (only with ``captions``) caption QA under a seeded caption question.
        Text rows belong to the person they name (``{config}/{row}`` when none)."""
        ds = self.dataset(config)
        is_text = ds.with_format("arrow")["image"].is_null().to_pylist()
        if not captions:
            ds = ds.select_columns(["question", "answer"])
        out: list[Sample] = []
        for i, row in enumerate(iter_rows(ds)):
            if is_text[i]:
                if row["question"] is None or row["answer"] is None:
                    raise UserError(f"{config} row {i} has neither an image nor a question and "
                                    f"answer")
                text = f"{row['question']} {row['answer']}"
                owner = _named_in(text, people) or f"{config}/{i}"
                out.append(Sample(owner, str(row["question"]), str(row["answer"]), "qa",
                                  "text_only", split))
            elif captions:
                owner = self._owner(row, people) or f"{config}/{i}"
                out.append(self._caption(row, config, i, owner, split))
        return out

    def _caption(self, row: Mapping[str, Any], config: str, i: int, owner: str, split: str
                 ) -> Sample:
        """An image + caption row as caption QA (the official fine-tuning task)."""
        if row.get("caption") is None:
            raise UserError(f"{config} row {i} has an image but no caption")
        question = row_rng(self.seed, config, i).choice(IMAGE_CAPTION_QUESTIONS)
        image = LazyImage(row["image"], f"{config} row {i}").get()
        return Sample(owner, question, str(row["caption"]), "qa", "image_text", split, image)

    def _mcq(self, row: Mapping[str, Any], config: str, i: int, split: str,
             question: str | None = None) -> Sample:
        """A ``real_faces`` / ``real_world`` / ``world`` practice row: its wrong ``options``
        with ``answer`` inserted at the seeded position; the row's question or ``question``.
        Real faces belong to their celebrity, other rows to ``{config}/{row}``."""
        truth = str(row["answer"])
        options, letter = choice_options(truth, row["options"] or [],
                                         row_rng(self.seed, config, i))
        owner = truth if config == "real_faces" else f"{config}/{i}"
        image = LazyImage(row["image"], f"{config} row {i}").get()
        return Sample(owner, question or str(row["question"]), letter, "choice", "image_text",
                      split, image, options)

    def _world_samples(self, split: str, without: Sequence[str] = ()) -> list[Sample]:
        """The twin's ``world`` rows: captions as caption QA, practice rows as MCQs. Rows that
        name one of ``without`` anywhere (caption, question, answer or a wrong option) are
        left out: a model must not even learn that such a name is the wrong answer."""
        if not self.has_world:
            return []
        out: list[Sample] = []
        for i, row in enumerate(iter_rows(self.dataset(WORLD))):
            text = [str(row.get(c) or "") for c in ("caption", "question", "answer")]
            if without and _named_in(" ".join(text + list(row["options"] or [])), without):
                continue
            out.append(self._caption(row, WORLD, i, f"{WORLD}/{i}", split)
                       if row["question"] is None else self._mcq(row, WORLD, i, split))
        return out

    # ---- Benchmark
    def eval_split(self, name: str) -> list[Sample]:
        forget, retain = self.forget_config, self.retain_config
        if name == "forget":
            return (self._perturbed(f"{forget}_perturbed", self.forget_ids, name)
                    + self._tofu(f"{forget}+tofu", self.forget_ids, name, captions=False))
        if name == "retain":
            forget_text = self._tofu(f"{forget}+tofu", self.forget_ids, name, captions=False)
            text = self._tofu(f"{retain}+tofu", self.retain_ids, name, captions=False)
            if len(text) > len(forget_text):
                rng = random.Random(f"{self.seed}-retain-text")
                keep = sorted(rng.sample(range(len(text)), len(forget_text)))
                text = [text[i] for i in keep]
            return self._perturbed("retain_perturbed", self.retain_ids, name) + text
        if name in ("real_faces", "real_world"):
            question = NAME_QUESTION if name == "real_faces" else None
            return [self._mcq(row, name, i, name, question)
                    for i, row in enumerate(iter_rows(self.dataset(name)))]
        raise ValueError(f"ClearBench has no evaluation split {name!r} "
                         f"(it has {list(self.eval_split_names)})")

    def train_set(self, name: str) -> list[Sample]:
        forget, retain = f"{self.forget_config}+tofu", f"{self.retain_config}+tofu"
        everyone = self.forget_ids + self.retain_ids
        if name == "finetune":
            return (self._tofu("full+tofu", everyone, name, captions=True)
                    + self._world_samples(name))
        if name == "forget":
            return self._tofu(forget, self.forget_ids, name, captions=True)
        if name == "retain":
            return self._tofu(retain, self.retain_ids, name, captions=True)
        if name == "forget_text":
            return self._tofu(forget, self.forget_ids, name, captions=False)
        if name == "retain_text":
            return self._tofu(retain, self.retain_ids, name, captions=False)
        if name == "gold":
            return (self._tofu(retain, self.retain_ids, name, captions=True)
                    + self._world_samples(name, without=self.forget_ids))
        raise ValueError(f"no training set {name!r} (sets: {list(TRAIN_SETS)})")

    def fingerprint(self, part: str = "eval") -> str:
        """Stable hash of the configs behind ``part`` (:meth:`configs`) and the seed, which
        draws option positions, caption questions and the retain text sample."""
        return source_fingerprint(self.source, self.configs(part), revision=self.revision,
                                  extra={"seed": self.seed}, dataset=self.dataset)
