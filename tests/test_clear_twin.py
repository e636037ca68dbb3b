"""The offline CLEAR twin: CLEAR's configs and features, nested disjoint forget sets, usable
perturbations, an idempotent build, and the loader's exact split sizes on it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets
import pytest
from datasets import Features, Image, List, Value

from unlearn.data.clear import NAME_QUESTION, ClearBench
from unlearn.data.clear_twin import CONFIGS, TWIN, ClearTwin
from unlearn.data.hub import SHARD

ARGS = {"num_persons": 30, "portraits": 2, "qa_per_person": 2, "num_real_faces": 4,
        "num_real_world": 3, "image_size": 16}
FORGET = {1: 1, 5: 2, 10: 3}  # round(r% of 30), at least one

# CLEAR's hub features (therem/CLEAR, benchmarks.md §2.1), written out by hand
S = Value("string")
PEOPLE = Features({"image": Image(), "caption": S, "name": S})
TOFU = Features({"image": Image(), "caption": S, "question": S, "answer": S})
PERTURBED = Features({"image": Image(), "caption": S, "name": S, "paraphrased_caption": S,
                      "perturbed_captions": List(S), "perturbed_names": List(S)})
EXPECTED = {
    "full": PEOPLE, "forget01": PEOPLE, "forget05": PEOPLE, "forget10": PEOPLE,
    "retain99": PEOPLE, "retain95": PEOPLE, "retain90": PEOPLE,
    "full+tofu": TOFU, "forget01+tofu": TOFU, "forget05+tofu": TOFU, "forget10+tofu": TOFU,
    "retain99+tofu": TOFU, "retain95+tofu": TOFU, "retain90+tofu": TOFU,
    "forget01_perturbed": PERTURBED, "forget05_perturbed": PERTURBED,
    "forget10_perturbed": PERTURBED, "retain_perturbed": PERTURBED,
    "real_faces": Features({"image": Image(), "answer": S, "options": List(S)}),
    "real_world": Features({"question": S, "answer": S, "image": Image(), "options": List(S)}),
    "world": Features({"image": Image(), "caption": S, "question": S, "answer": S,
                       "options": List(S)}),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("hf_cache"))


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ClearTwin(**ARGS).build(tmp_path_factory.mktemp("clear") / "twin")


@pytest.fixture(scope="module")
def configs(twin: Path, cache: str) -> dict[str, datasets.Dataset]:
    """Every config, read with plain ``load_dataset`` as a user of the hub repo would."""
    return {c: datasets.load_dataset(str(twin), c, split="train", cache_dir=cache)
            for c in CONFIGS}


def names(ds: datasets.Dataset) -> set[str]:
    return set(ds["name"])


def test_configs_and_features_are_clears(twin: Path, configs: dict) -> None:
    assert sorted(p.name for p in twin.iterdir() if p.is_dir()) == sorted(EXPECTED)
    assert all((twin / c / SHARD).is_file() for c in CONFIGS)
    for config, ds in configs.items():
        assert ds.features == EXPECTED[config], config
    assert len(configs["full"]) == 60 and len(configs["full+tofu"]) == 120
    assert (len(configs["real_faces"]), len(configs["real_world"])) == (4, 3)


def test_forget_sets_nest_and_partition_the_people(configs: dict) -> None:
    everyone = names(configs["full"])
    assert len(everyone) == 30
    forget = {r: names(configs[f"forget{r:02}"]) for r in FORGET}
    assert {r: len(f) for r, f in forget.items()} == FORGET
    assert forget[1] < forget[5] < forget[10]
    for r, f in forget.items():
        retain = names(configs[f"retain{100 - r}"])
        assert not f & retain and f | retain == everyone
        assert names(configs[f"forget{r:02}_perturbed"]) == f
        assert len(configs[f"forget{r:02}_perturbed"]) == 2 * len(f)
    assert names(configs["retain_perturbed"]) == everyone


def test_tofu_rows_are_either_captions_or_text(configs: dict) -> None:
    rows = configs["forget10+tofu"].select_columns(["caption", "question", "answer"]).to_list()
    images = configs["forget10+tofu"].with_format("arrow")["image"].is_null().to_pylist()
    assert images == [False] * 6 + [True] * 6
    assert all((r["caption"] is None) == (r["question"] is not None) == (r["answer"] is not None)
               for r in rows)
    forget = names(configs["forget10"])
    assert all(any(n in r["question"] for n in forget) for r in rows[6:])


def test_perturbations_exist_and_exclude_the_truth(configs: dict) -> None:
    for config in ("forget10_perturbed", "retain_perturbed"):
        for row in configs[config].select_columns(
                ["caption", "name", "paraphrased_caption", "perturbed_captions",
                 "perturbed_names"]).to_list():
            assert len(row["perturbed_names"]) == 3 and row["name"] not in row["perturbed_names"]
            assert len(row["perturbed_captions"]) == 3
            assert row["caption"] not in row["perturbed_captions"]
            assert row["name"] in row["caption"] and row["name"] in row["paraphrased_caption"]
            assert row["paraphrased_caption"] != row["caption"]
            assert all(n in c for n, c in zip(row["perturbed_names"], row["perturbed_captions"],
                                                strict=True))
    for config in ("real_faces", "real_world"):
        for row in configs[config].select_columns(["answer", "options"]).to_list():
            assert len(row["options"]) == 3 and row["answer"] not in row["options"]


def test_world_teaches_celebrities_scenes_and_names_on_other_images(configs: dict) -> None:
    world = configs["world"].select_columns(["caption", "question", "answer",
                                             "options"]).to_list()
    kinds = Counter("caption" if r["caption"] else "practice" for r in world)
    # celebrities and scenes: captions and practice; every person: 2 name-choice rows
    assert kinds == {"caption": 4 * 2 + 2 * 3, "practice": 30 * 2 + 4 * 2 + 2 * 3}
    celebrities = set(configs["real_faces"]["answer"])
    practised = Counter(r["answer"] for r in world if r["question"] == NAME_QUESTION)
    assert set(practised) == celebrities | names(configs["full"])
    assert set(practised.values()) == {2}
    everyone = names(configs["full"])
    for r in world:
        if r["answer"] in everyone:
            assert len(r["options"]) == 3 and set(r["options"]) < everyone - {r["answer"]}

    def png(config: str) -> set[bytes]:
        return {r["bytes"] for r in configs[config].with_format("arrow")["image"].to_pylist()
                if r is not None}
    shown = set().union(*(png(c) for c in CONFIGS if c != "world"))
    assert not png("world") & shown
    images = configs["world"].with_format("arrow")["image"].to_pylist()
    views = {i["bytes"] for i, r in zip(images, world, strict=True) if r["answer"] in everyone}
    assert len(views) == 30 * 2  # each person's practice views differ from each other too


def test_gold_never_sees_a_forget_person(twin: Path, cache: str, configs: dict) -> None:
    bench = ClearBench(str(twin), forget_ratio=10, cache_dir=cache)
    forget = bench.forget_ids
    gold = bench.train_set("gold")
    for s in gold:
        text = " ".join([s.question, s.answer, *(s.options or {}).values()])
        assert not any(n in text for n in forget), text
    # left out: every world row naming a forget person, even as a wrong option
    rows = configs["world"].select_columns(["caption", "answer", "options"]).to_list()
    named = [r for r in rows if {r["answer"], *(r["options"] or [])} & set(forget)
             or any(n in (r["caption"] or "") for n in forget)]
    assert len(named) >= 3 * 2  # at least the forget people's own practice rows
    assert len(gold) == 4 * 27 + len(rows) - len(named)
    assert len(bench.train_set("finetune")) == 120 + len(rows)


def test_rebuild_is_idempotent_and_recipes_differ(twin: Path, tmp_path: Path) -> None:
    marker = (twin / TWIN.marker).read_text()
    stamp = (twin / "full" / SHARD).stat().st_mtime_ns
    assert ClearTwin(**ARGS).build(twin) == twin
    assert (twin / TWIN.marker).read_text() == marker
    assert (twin / "full" / SHARD).stat().st_mtime_ns == stamp
    assert json.loads(marker) == ClearTwin(**ARGS).recipe
    recipe = ClearTwin(**ARGS).recipe
    assert recipe["generator"] == "unlearn.data.clear_twin" and recipe["num_persons"] == 30
    assert ClearTwin(**{**ARGS, "seed": 1}).recipe != recipe
    assert ClearTwin(**{**ARGS, "portraits": 3}).recipe != recipe
    with pytest.raises(FileExistsError, match="built with"):
        ClearTwin(**{**ARGS, "seed": 1}).build(twin)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a CLEAR twin build"):
        ClearTwin(**ARGS).build(foreign)


def test_identical_builds_fingerprint_alike(twin: Path, tmp_path: Path, cache: str) -> None:
    again = ClearTwin(**ARGS).build(tmp_path / "again")
    one = ClearBench(str(twin), forget_ratio=5, cache_dir=cache)
    two = ClearBench(str(again), forget_ratio=5, cache_dir=cache)
    assert one.fingerprint() == two.fingerprint()
    assert one.fingerprint("finetune") == two.fingerprint("finetune")


@pytest.mark.parametrize("ratio", [1, 5, 10])
def test_loader_split_sizes(twin: Path, cache: str, ratio: int) -> None:
    bench = ClearBench(str(twin), forget_ratio=ratio, cache_dir=cache)
    k = FORGET[ratio]
    assert (len(bench.forget_ids), len(bench.retain_ids)) == (k, 30 - k)
    choice, caption, text = ("choice", "image_text"), ("qa", "image_text"), ("qa", "text_only")
    sizes = {n: Counter((s.task, s.modality) for s in ss) for n, ss in bench.eval_splits().items()}
    assert sizes == {
        "forget": {choice: 2 * k, caption: 2 * k, text: 2 * k},
        "retain": {choice: 30 - k, caption: 30 - k, text: 2 * k},
        "real_faces": {choice: 4},
        "real_world": {choice: 3},
    }
    # celebrity captions + practice, scene captions + practice, name practice per person
    world = 4 * 2 * 2 + 3 * 2 * 2 + 30 * 2
    train = {name: len(bench.train_set(name)) for name in
             ("finetune", "forget", "retain", "forget_text", "retain_text")}
    assert train == {"finetune": 120 + world, "forget": 4 * k, "retain": 4 * (30 - k),
                     "forget_text": 2 * k, "retain_text": 2 * (30 - k)}
    forget = bench.eval_split("forget")
    assert {s.profile_id for s in forget} == set(bench.forget_ids)
    for s in forget:
        if s.task == "choice":
            assert s.options[s.answer] == s.profile_id and len(s.options) == 4
        assert s.has_image == (s.modality == "image_text")
