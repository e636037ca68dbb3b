"""Synthetic MLLMU-Bench twin, written to disk in the real Hugging Face layout and schema.

Why: tests and tiny-world experiments must run offline through the *same* loader as the real
benchmark (:mod:`unlearn.data.mllmu`), so the twin mirrors the hub repo ``MLLMMU/MLLMU-Bench``:
one folder per config holding ``train-00000-of-00001.parquet`` and a ``README.md`` whose YAML
header declares the configs, so ``datasets.load_dataset(root, "forget_5", split="train")``
works. Columns and nested features equal the real ones (see :data:`EVAL_FEATURES`,
:data:`TEST_FEATURES`, :data:`FT_FEATURES`).

The tiny world: every fictitious profile has a unique name, ``num_facts`` facts (birth year,
profession, hometown, hobby, then sport, instrument, pet, favourite colour, favourite food,
native language; each drawn independently) and a procedurally drawn portrait
(:mod:`unlearn.data.images`). Evaluation questions ask about the name and these facts, with
and without the image; fine-tuning
items (``ft_Data``) teach the same facts with *different* question phrasings, MCQ option
orders and cloze sentences, so evaluation measures knowledge rather than copying.

``Retain_Set`` is, as in the real benchmark, a set of "celebrities": profiles disjoint from
``Full_Set``. A real base model knows celebrities from pre-training; a randomly initialised
tiny model knows nothing, so the twin's ``ft_Data`` also holds one row per celebrity. The
vanilla fine-tune thereby stands in for pre-training, and ``Retain_Set`` measures whether
unlearning damages knowledge outside the fictitious set.

Splits: ``forget_r`` / ``retain_{100-r}`` partition ``Full_Set`` by ID (``r`` % of the
profiles rounded, at least one), drawn by one seeded shuffle per ratio (not nested, as in the
official split). ``Test_Set`` holds every ``Full_Set`` profile with several views of its
portrait (rotation, shift, scale, lighting) under ``images`` and the same questions.

The extra ``ft_Data`` item keys ``Type``, ``Task`` and ``Options`` are ours (the real items

Modules, one job each: :mod:`~unlearn.data.synthetic.world` (vocabulary, profiles, facts),
:mod:`~unlearn.data.synthetic.items` (templates, MCQ options, evaluation rows),
:mod:`~unlearn.data.synthetic.finetune` (``ft_Data`` items),
:mod:`~unlearn.data.synthetic.icu` (ICU practice items) and
:mod:`~unlearn.data.synthetic.build` (recipe, features, the atomic hub-layout build).
"""

from unlearn.data.synthetic.build import (
    CONFIGS,
    EVAL_FEATURES,
    FORGET_RATIOS,
    FT_FEATURES,
    GENERATOR_VERSION,
    TEST_FEATURES,
    TWIN,
    MLLMUTwin,
    build_synthetic_mllmu,
    forget_ids,
    hash_seed,
    synthetic_args,
)
from unlearn.data.synthetic.finetune import ft_items
from unlearn.data.synthetic.icu import (
    ICU_REFUSALS,
    ICU_TRAIN_INSTRUCTIONS,
    ICU_TRAIN_OVERRIDES,
    icu_items,
)
from unlearn.data.synthetic.items import eval_row, fact_sentence
from unlearn.data.synthetic.world import (
    ALL_FACTS,
    BASE_FACTS,
    FACT_POOLS,
    MAX_FACTS,
    Profile,
    make_profiles,
    profile_records,
)

__all__ = [
    "ALL_FACTS",
    "BASE_FACTS",
    "CONFIGS",
    "EVAL_FEATURES",
    "FACT_POOLS",
    "FORGET_RATIOS",
    "FT_FEATURES",
    "GENERATOR_VERSION",
    "ICU_REFUSALS",
    "ICU_TRAIN_INSTRUCTIONS",
    "ICU_TRAIN_OVERRIDES",
    "MAX_FACTS",
    "TEST_FEATURES",
    "TWIN",
    "MLLMUTwin",
    "Profile",
    "build_synthetic_mllmu",
    "eval_row",
    "fact_sentence",
    "forget_ids",
    "ft_items",
    "hash_seed",
    "icu_items",
    "make_profiles",
    "profile_records",
    "synthetic_args",
]
