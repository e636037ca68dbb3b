"""MLLMU-Bench loader: one code path for the hub benchmark, a local copy and the synthetic twin.

Why one path: the twin (:mod:`unlearn.data.synthetic`) is written in the hub layout and schema,
so every test that reads it exercises exactly the code that reads ``MLLMMU/MLLMU-Bench``.

Rows are read straight from Arrow (images stay ``{"bytes", "path"}`` dicts) and each image is
decoded once per row, only when a question needs it. Plain iterables of row dicts (with PIL
images, byte dicts, bytes or paths) are accepted as well.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import datasets

from unlearn.data.benchmark import HubBenchmark
from unlearn.data.hub import LazyImage, Rows, iter_rows, source_fingerprint
from unlearn.data.schema import Modality, Sample, Task

log = logging.getLogger(__name__)

HUB_ID = "MLLMMU/MLLMU-Bench"
FORGET_RATIOS: tuple[int, ...] = (5, 10, 15)
TYPE_TO_MODALITY: dict[str, Modality] = {"Image_Textual": "image_text", "Pure_Text": "text_only"}
TASK_NAMES: dict[str, Task] = {
    "Generation": "generation",
    "Classification": "classification",
    "Mask": "cloze",
}


def _json(value: Any, what: str) -> Any:
    """Decode a JSON-string column (``biography``, ``metadata``); pass parsed values through."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise ValueError(f"{what} is not valid JSON: {value[:80]!r}") from err
    return value


def _name(row: Mapping[str, Any]) -> str | None:
    """The profile name from ``biography`` (used only as Sample metadata)."""
    bio = row.get("biography")
    if bio is None:
        return None
    try:
        parsed = _json(bio, "biography")
    except ValueError:
        return None
    return parsed.get("Name") if isinstance(parsed, Mapping) else None


def _modality(type_: Any, where: str) -> Modality:
    """``Type`` -> modality; clear error for values the benchmark does not define."""
    try:
        return TYPE_TO_MODALITY[str(type_)]
    except KeyError:
        allowed = list(TYPE_TO_MODALITY)
        raise ValueError(f"unknown Type {type_!r} in {where} (expected {allowed})") from None


def _letter(answer: Any, options: Mapping[str, str]) -> str:
    """Normalise ``Correct_Answer`` ("A", " a", "A.") to an option key when unambiguous."""
    text = str(answer).strip()
    if text not in options and text[:1].upper() in options:
        return text[:1].upper()
    return text


def _sample(
    pid: str,
    split: str,
    meta: dict[str, Any],
    image: LazyImage,
    question: str,
    answer: str,
    task: Task,
    modality: Modality,
    options: dict[str, str] | None = None,
) -> Sample:
    """One Sample; the image is attached (decoded) only for image-text questions."""
    return Sample(
        profile_id=pid,
        question=str(question),
        answer=answer,
        task=task,
        modality=modality,
        split=split,
        image=image.get() if modality == "image_text" else None,
        options=options,
        meta=dict(meta),
    )


def eval_samples(ds: Rows, split: str, *, seed: int = 0) -> list[Sample]:
    """Eval-schema rows (Full_Set, forget_*, retain_*, Retain_Set, Test_Set) -> Samples.

    Per row: classification (image-text, then pure-text), cloze, generation. ``Test_Set``
    rows (column ``images``) use one view per row, drawn with ``random.Random(seed)`` as the
    official code draws one at random. ``Directory`` and other extra columns are ignored.
    """
    rng = random.Random(seed)
    out: list[Sample] = []
    for row in iter_rows(ds):
        pid = str(row["ID"])
        meta: dict[str, Any] = {}
        name = _name(row)
        if name is not None:
            meta["name"] = name
        if "image" in row:
            value = row["image"]
        else:
            views = row.get("images") or []
            if not views:
                raise ValueError(f"profile {pid!r} has neither 'image' nor 'images'")
            meta["view"] = rng.randrange(len(views))
            value = views[meta["view"]]
        image = LazyImage(value, f"profile {pid!r}")
        mcqs = row.get("Classification_Task") or {}
        for key, modality in (
            ("Image_Textual_Questions", "image_text"),
            ("Pure_Text_Questions", "text_only"),
        ):
            for q in mcqs.get(key) or []:
                options = {k: str(v) for k, v in (q["Options"] or {}).items() if v is not None}
                letter = _letter(q["Correct_Answer"], options)
                out.append(
                    _sample(
                        pid,
                        split,
                        meta,
                        image,
                        q["Question"],
                        letter,
                        "classification",
                        modality,
                        options,
                    )
                )
        for column, task in (("Mask_Task", "cloze"), ("Generation_Task", "generation")):
            for q in row.get(column) or []:
                modality = _modality(q["Type"], f"{column} of profile {pid!r}")
                truth = str(q["Ground_Truth"])
                out.append(_sample(pid, split, meta, image, q["Question"], truth, task, modality))
    return out


def train_samples(ds: Rows, split: str = "train") -> list[Sample]:
    """ft_Data-format rows (``image``, ``ID``, JSON ``metadata``) -> Samples.

    Item keys beyond ``Question``/``Answer`` are optional (the real ft_Data has only those):
    missing ``Task`` -> task "qa", missing ``Type`` -> image-text. ``ID`` falls back to the
    item's own ``ID`` (as in the baseline splits), then to the row index.
    """
    out: list[Sample] = []
    for index, row in enumerate(iter_rows(ds)):
        items = _json(row["metadata"], f"metadata of row {index}")
        row_id = row.get("ID")
        owner = str(row_id if row_id is not None else index)
        image = LazyImage(row.get("image"), f"profile {owner!r}")
        for item in items:
            pid = str(row_id if row_id is not None else item.get("ID", index))
            task_name = item.get("Task")
            if task_name is None:
                task: Task = "qa"
            elif task_name in TASK_NAMES:
                task = TASK_NAMES[task_name]
            else:
                raise ValueError(f"unknown Task {task_name!r} in ft item of profile {pid!r}")
            modality = _modality(item.get("Type", "Image_Textual"), f"ft item of profile {pid!r}")
            options = None
            if task == "classification":
                options = {k: str(v) for k, v in item["Options"].items()}
            out.append(
                Sample(
                    profile_id=pid,
                    question=str(item["Question"]),
                    answer=str(item["Answer"]),
                    task=task,
                    modality=modality,
                    split=split,
                    image=image.get() if modality == "image_text" else None,
                    options=options,
                )
            )
    return out


def text_qa(ds: Rows, split: str) -> list[Sample]:
    """Eval-schema rows' pure-text multiple-choice questions as plain text-only QA pairs:
    the question alone (no options, no image) -> the text of its correct option.

    This is how the official MMUnlearner mask script turns ``Full_Set`` into text-only data
    (the real ``ft_Data`` has none): its language-mask preserve set is these pairs for every
    profile. Images are never read.
    """
    if isinstance(ds, datasets.Dataset):
        ds = ds.select_columns(
            [c for c in ("ID", "biography", "Classification_Task") if c in ds.column_names]
        )
    out: list[Sample] = []
    for row in iter_rows(ds):
        pid = str(row["ID"])
        name = _name(row)
        meta = {"name": name} if name is not None else {}
        for q in (row.get("Classification_Task") or {}).get("Pure_Text_Questions") or []:
            options = {k: str(v) for k, v in (q["Options"] or {}).items() if v is not None}
            letter = _letter(q["Correct_Answer"], options)
            if letter not in options:
                raise ValueError(
                    f"pure-text question {q['Question']!r} of profile {pid!r}: Correct_Answer "
                    f"{q['Correct_Answer']!r} is not one of its options {sorted(options)}"
                )
            out.append(
                Sample(
                    profile_id=pid,
                    question=str(q["Question"]),
                    answer=options[letter],
                    task="qa",
                    modality="text_only",
                    split=split,
                    meta=dict(meta),
                )
            )
    return out


def _ids(ds: datasets.Dataset, config: str) -> list[str]:
    """The ``ID`` column as strings (no image decoding)."""
    if "ID" not in ds.column_names:
        raise ValueError(f"config {config!r} has no 'ID' column (columns: {ds.column_names})")
    return [str(x) for x in ds.select_columns(["ID"]).with_format("arrow")["ID"].to_pylist()]


def _select_ids(ds: datasets.Dataset, config: str, keep: Sequence[str]) -> datasets.Dataset:
    """Rows whose ``ID`` is in ``keep`` (order of the dataset)."""
    wanted = set(keep)
    ids = _ids(ds, config)
    missing = wanted - set(ids)
    if missing:
        log.warning(
            "%s lacks %d requested IDs (e.g. %s)", config, len(missing), sorted(missing)[:3]
        )
    return ds.select([i for i, x in enumerate(ids) if x in wanted])


@dataclass
class MLLMUBench(HubBenchmark):
    """MLLMU-Bench at one forget ratio: ID splits, eval sets and training sets as Samples.

    ``source`` is a hub id (``MLLMMU/MLLMU-Bench``) or a local folder in the hub layout
    (a real copy or the synthetic twin). Eval splits: ``forget`` (``forget_r``), ``test``
    (``Test_Set`` restricted to the forget IDs), ``retain`` (``retain_{100-r}``) and
    ``celebrity`` (``Retain_Set``). Training sets come from ``ft_Data``; the pure-text QA
    pairs of :meth:`forget_text_qa` / :meth:`retain_text_qa` from ``Full_Set``.
    """

    forget_ratios: ClassVar[tuple[int, ...]] = FORGET_RATIOS
    eval_split_names: ClassVar[tuple[str, ...]] = ("forget", "test", "retain", "celebrity")
    people_noun: ClassVar[str] = "IDs"

    source: str = HUB_ID
    forget_ratio: int = 5
    _fingerprints: dict[tuple[str, ...], str] = field(init=False, default_factory=dict, repr=False)

    def people(self, config: str) -> list[str]:
        """The config's profile IDs, in its order."""
        return _ids(self.dataset(config), config)

    @property
    def forget_config(self) -> str:
        return f"forget_{self.forget_ratio}"

    @property
    def retain_config(self) -> str:
        return f"retain_{100 - self.forget_ratio}"

    # ---- evaluation splits
    def forget(self) -> list[Sample]:
        return eval_samples(self.dataset(self.forget_config), "forget", seed=self.seed)

    def test(self) -> list[Sample]:
        ds = _select_ids(self.dataset("Test_Set"), "Test_Set", self.forget_ids)
        return eval_samples(ds, "test", seed=self.seed)

    def retain(self) -> list[Sample]:
        return eval_samples(self.dataset(self.retain_config), "retain", seed=self.seed)

    def celebrity(self) -> list[Sample]:
        return eval_samples(self.dataset("Retain_Set"), "celebrity", seed=self.seed)

    # ---- training sets
    def finetune(self) -> list[Sample]:
        """Every ft_Data row (the vanilla model's training set)."""
        return train_samples(self.dataset("ft_Data"), "finetune")

    def forget_train(self) -> list[Sample]:
        return train_samples(
            _select_ids(self.dataset("ft_Data"), "ft_Data", self.forget_ids), "forget"
        )

    def retain_train(self) -> list[Sample]:
        return train_samples(
            _select_ids(self.dataset("ft_Data"), "ft_Data", self.retain_ids), "retain"
        )

    # ---- pure-text QA (MMUnlearner's text-only preserve data)
    def forget_text_qa(self) -> list[Sample]:
        """The forget profiles' pure-text questions from ``Full_Set`` (:func:`text_qa`)."""
        return text_qa(
            _select_ids(self.dataset("Full_Set"), "Full_Set", self.forget_ids), "forget"
        )

    def retain_text_qa(self) -> list[Sample]:
        """The retain profiles' pure-text questions from ``Full_Set`` (:func:`text_qa`)."""
        return text_qa(
            _select_ids(self.dataset("Full_Set"), "Full_Set", self.retain_ids), "retain"
        )

    # ---- the Benchmark interface
    def eval_split(self, name: str) -> list[Sample]:
        if name not in self.eval_split_names:
            raise ValueError(f"MLLMU-Bench has no evaluation split {name!r} "
                             f"(it has {list(self.eval_split_names)})")
        return getattr(self, name)()

    def train_set(self, name: str) -> list[Sample]:
        sets = {"finetune": self.finetune, "forget": self.forget_train,
                "retain": self.retain_train, "forget_text": self.forget_text_qa,
                "retain_text": self.retain_text_qa, "gold": self.gold_train}
        if name not in sets:
            raise ValueError(f"no training set {name!r} (known: {list(sets)})")
        return sets[name]()

    def gold_train(self) -> list[Sample]:
        """ft_Data without the forget profiles: what a model that never saw them learns."""
        ft = self.dataset("ft_Data")
        forget = set(self.forget_ids)
        return train_samples(_select_ids(ft, "ft_Data",
                                         [i for i in _ids(ft, "ft_Data") if i not in forget]),
                             "gold")

    def fingerprint(self, part: str = "eval") -> str:
        """Stable hash of the data behind ``part``: ``"eval"`` (the five configs a run reads),
        ``"finetune"`` (``ft_Data``: the vanilla model, independent of the forget ratio) or
        ``"gold"`` (``ft_Data`` and the forget IDs).

        Local folders hash file contents (identical twins hash alike wherever they live);
        hub sources hash the source id plus each loaded config's ``_fingerprint``.
        """
        parts = {"eval": (self.forget_config, self.retain_config, "Test_Set", "Retain_Set",
                          "ft_Data"),
                 "finetune": ("ft_Data",), "gold": ("ft_Data", self.forget_config)}
        if part not in parts:
            raise ValueError(f"fingerprint part {part!r} is not one of {list(parts)}")
        return self.configs_fingerprint(parts[part])

    def configs_fingerprint(self, names: Sequence[str]) -> str:
        """Stable hash of the configs ``names``."""
        names = tuple(names)
        if names not in self._fingerprints:
            # the seed matters only through Test_Set's view choice
            seed = self.seed if "Test_Set" in names else None
            self._fingerprints[names] = source_fingerprint(
                self.source, names, revision=self.revision, extra=seed, dataset=self.dataset)
        return self._fingerprints[names]
