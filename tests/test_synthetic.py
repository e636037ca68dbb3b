"""The synthetic MLLMU-Bench twin: real schema, split invariants, a world that tests knowledge."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import datasets
import numpy as np
import pytest
from datasets import Features, Image, List, Value

from unlearn.data.hub import SHARD
from unlearn.data.images import draw_portrait, make_views, unique_traits
from unlearn.data.synthetic import (
    CONFIGS,
    ICU_TRAIN_INSTRUCTIONS,
    MAX_FACTS,
    TWIN,
    MLLMUTwin,
    build_synthetic_mllmu,
    synthetic_args,
)

N_PROFILES, N_CELEBS, VIEWS = 20, 6, 3
EVAL_CONFIGS = ("Full_Set", "forget_5", "forget_10", "forget_15", "retain_95", "retain_90")
EVAL_CONFIGS += ("retain_85", "Retain_Set")
ALL_CONFIGS = (*EVAL_CONFIGS, "Test_Set", "ft_Data")

# The MLLMU-Bench hub schema (MLLMMU/MLLMU-Bench configs), written out by hand (not imported).
S = Value("string")
MCQ = List({"Correct_Answer": S, "Options": {"A": S, "B": S, "C": S, "D": S}, "Question": S})
ITEMS = List({"Ground_Truth": S, "Question": S, "Type": S})
TASKS = {
    "ID": S,
    "Directory": S,
    "biography": S,
    "question": S,
    "answer": S,
    "Classification_Task": {"Image_Textual_Questions": MCQ, "Pure_Text_Questions": MCQ},
    "Generation_Task": ITEMS,
    "Mask_Task": ITEMS,
}
EXPECTED_EVAL = Features({"image": Image(), **TASKS})
EXPECTED_TEST = Features({"images": List(Image()), **TASKS})
EXPECTED_FT = Features({"image": Image(), "ID": S, "metadata": S})
BIO_KEYS = {"name": "Name", "year": "Born", "profession": "Employment"}
BIO_KEYS |= {"hometown": "Hometown", "hobby": "Hobby", "sport": "Sport"}
BIO_KEYS |= {"instrument": "Instrument", "pet": "Pet", "color": "Favorite_Color"}
BIO_KEYS |= {"food": "Favorite_Food", "language": "Native_Language"}


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("twin") / "mllmu"
    return build_synthetic_mllmu(
        root, num_profiles=N_PROFILES, num_celebrities=N_CELEBS, seed=0, test_views=VIEWS,
        num_facts=MAX_FACTS,
    )


@pytest.fixture(scope="module")
def configs(twin: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, datasets.Dataset]:
    """Every config, read with plain ``load_dataset`` as a user of the hub repo would."""
    cache = str(tmp_path_factory.mktemp("hf_cache"))
    offline = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True
    try:
        return {
            c: datasets.load_dataset(str(twin), c, split="train", cache_dir=cache)
            for c in ALL_CONFIGS
        }
    finally:
        datasets.config.HF_HUB_OFFLINE = offline


def _rows(ds: datasets.Dataset) -> list[dict]:
    """Rows without images (undecoded), for content comparisons."""
    cols = [c for c in ds.column_names if c not in ("image", "images")]
    return ds.select_columns(cols).to_list()


def _truth(bio: dict, question: str) -> str:
    """The true value a question asks about, found by its attribute keyword."""
    q = question.lower()
    if "hometown" in q:
        return bio["Hometown"]
    hits = [bio[key] for word, key in BIO_KEYS.items() if word in q]
    assert len(hits) == 1, question
    return hits[0]


def _hash_tree(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_configs_have_exact_features(configs: dict[str, datasets.Dataset]) -> None:
    for name in EVAL_CONFIGS:
        assert configs[name].features == EXPECTED_EVAL, name
        assert list(configs[name].features) == list(EXPECTED_EVAL), name
    assert configs["Test_Set"].features == EXPECTED_TEST
    assert list(configs["Test_Set"].features) == list(EXPECTED_TEST)
    assert configs["ft_Data"].features == EXPECTED_FT
    assert list(configs["ft_Data"].features) == list(EXPECTED_FT)


def test_row_counts(configs: dict[str, datasets.Dataset]) -> None:
    sizes = {name: len(ds) for name, ds in configs.items()}
    assert sizes == {
        "Full_Set": 20,
        "forget_5": 1,
        "forget_10": 2,
        "forget_15": 3,
        "retain_95": 19,
        "retain_90": 18,
        "retain_85": 17,
        "Retain_Set": 6,
        "Test_Set": 20,
        "ft_Data": 26,
    }


def test_forget_retain_partition_full_set(configs: dict[str, datasets.Dataset]) -> None:
    full = list(configs["Full_Set"]["ID"])
    assert len(set(full)) == len(full)
    for r in (5, 10, 15):
        forget = set(configs[f"forget_{r}"]["ID"])
        retain = set(configs[f"retain_{100 - r}"]["ID"])
        assert not forget & retain
        assert forget | retain == set(full)
    # rows of a split are the Full_Set rows themselves
    by_id = {row["ID"]: row for row in _rows(configs["Full_Set"])}
    for row in _rows(configs["forget_15"]):
        assert row == by_id[row["ID"]]


def test_celebrities_disjoint_from_full_set(configs: dict[str, datasets.Dataset]) -> None:
    def names(ds: datasets.Dataset) -> set[str]:
        return {json.loads(b)["Name"] for b in ds["biography"]}

    full, celeb = configs["Full_Set"], configs["Retain_Set"]
    assert not set(full["ID"]) & set(celeb["ID"])
    assert not names(full) & names(celeb)
    assert len(names(full)) == N_PROFILES and len(names(celeb)) == N_CELEBS
    first = {n.split()[0] for n in names(full)}
    assert not first & {n.split()[0] for n in names(celeb)}


def test_eval_questions_are_well_formed(configs: dict[str, datasets.Dataset]) -> None:
    for cfg in ("Full_Set", "Retain_Set"):
        for row in _rows(configs[cfg]):
            bio = json.loads(row["biography"])
            assert set(bio) >= {"Name", "Born", "Employment", "appearance_detail"}
            assert set(bio["appearance_detail"]) == {"question", "answer"}
            name = bio["Name"]
            facts = {v for k, v in bio.items() if k != "appearance_detail"}
            assert len(facts) == 1 + MAX_FACTS  # the default world: every fact
            img = row["Classification_Task"]["Image_Textual_Questions"]
            txt = row["Classification_Task"]["Pure_Text_Questions"]
            assert len(img) == 1 + MAX_FACTS and len(txt) == MAX_FACTS
            for q in img + txt:
                options = q["Options"]
                assert q["Correct_Answer"] in options
                truth = _truth(bio, q["Question"])
                assert options[q["Correct_Answer"]] == truth
                assert len(set(options.values())) == 4
                assert [v for v in options.values() if v in facts] == [truth]
            assert all(name not in q["Question"] for q in img)
            assert all("person in the image" in q["Question"] for q in img)
            assert all(name in q["Question"] and "image" not in q["Question"] for q in txt)
            cloze, gen = row["Mask_Task"], row["Generation_Task"]
            # one cloze and one generation item per fact: 11 image+text, 10 text-only
            types = ["Image_Textual"] * (1 + MAX_FACTS) + ["Pure_Text"] * MAX_FACTS
            assert [c["Type"] for c in cloze] == types
            assert [g["Type"] for g in gen] == types
            for c in cloze:
                assert c["Question"].count("__") == 1
                assert c["Ground_Truth"] == _truth(bio, c["Question"])
            for g in gen:
                assert g["Ground_Truth"].endswith(".")
                assert _truth(bio, g["Question"]) in g["Ground_Truth"]
                if g["Type"] == "Pure_Text":
                    assert g["Ground_Truth"].startswith(name)
                else:
                    assert g["Ground_Truth"].startswith("This person")


def test_correct_letters_are_spread(configs: dict[str, datasets.Dataset]) -> None:
    letters = [
        q["Correct_Answer"]
        for row in _rows(configs["Full_Set"])
        for key in ("Image_Textual_Questions", "Pure_Text_Questions")
        for q in row["Classification_Task"][key]
    ]
    counts = {k: letters.count(k) for k in "ABCD"}
    assert sum(counts.values()) == 21 * N_PROFILES
    assert min(counts.values()) >= 0.15 * len(letters), counts


def test_test_set_has_views_and_same_questions(configs: dict[str, datasets.Dataset]) -> None:
    full = {row["ID"]: row for row in _rows(configs["Full_Set"])}
    test = configs["Test_Set"]
    assert set(test["ID"]) == set(full)
    for row in _rows(test):
        assert row == full[row["ID"]]
    first = test[0]
    portrait = np.asarray(configs["Full_Set"][0]["image"], dtype=float)
    views = [np.asarray(v, dtype=float) for v in first["images"]]
    assert len(views) == VIEWS and all(v.shape == (64, 64, 3) for v in views)
    assert all(np.abs(v - portrait).mean() > 1.0 for v in views)  # views are not copies


def test_ft_data_items(configs: dict[str, datasets.Dataset]) -> None:
    full = {row["ID"]: row for row in _rows(configs["Full_Set"])}
    celeb = {row["ID"]: row for row in _rows(configs["Retain_Set"])}
    rows = _rows(configs["ft_Data"])
    assert [r["ID"] for r in rows] == list(full) + list(celeb)
    for row in rows:
        bio = json.loads((full | celeb)[row["ID"]]["biography"])
        facts = {v for k, v in bio.items() if k != "appearance_detail"}
        items = [it for it in json.loads(row["metadata"])  # ICU practice: test_vgid.py
                 if not it["Question"].startswith(ICU_TRAIN_INSTRUCTIONS)]
        assert len(items) == 147
        tasks = [(it["Task"], it["Type"]) for it in items]
        for type_, n_facts in (("Image_Textual", 1 + MAX_FACTS), ("Pure_Text", MAX_FACTS)):
            assert tasks.count(("Generation", type_)) == 2 * n_facts
            assert tasks.count(("Classification", type_)) == 3 * n_facts
            assert tasks.count(("Mask", type_)) == 2 * n_facts
        for it in items:
            assert set(it) >= {"Question", "Answer", "Type", "Task"}
            if it["Task"] == "Classification":
                assert set(it["Options"]) == set("ABCD")
                assert it["Options"][it["Answer"]] in facts
                others = [v for k, v in it["Options"].items() if k != it["Answer"]]
                assert not set(others) & facts and len(set(others)) == 3
            elif it["Task"] == "Mask":
                assert "__" in it["Question"] and it["Answer"] in facts
            else:
                assert any(f in it["Answer"] for f in facts)
        # per fact: the three MCQs put the answer at three different letters
        mcqs = [it for it in items if it["Task"] == "Classification"]
        for i in range(0, len(mcqs), 3):
            triple = mcqs[i : i + 3]
            assert len({it["Options"][it["Answer"]] for it in triple}) == 1
            assert len({it["Answer"] for it in triple}) == 3


def test_training_phrasings_differ_from_evaluation(configs: dict[str, datasets.Dataset]) -> None:
    eval_rows = {row["ID"]: row for row in _rows(configs["Full_Set"])}
    eval_rows |= {row["ID"]: row for row in _rows(configs["Retain_Set"])}
    for row in _rows(configs["ft_Data"]):
        ev = eval_rows[row["ID"]]
        mcqs = [
            q
            for key in ("Image_Textual_Questions", "Pure_Text_Questions")
            for q in ev["Classification_Task"][key]
        ]
        eval_questions = {q["Question"] for q in mcqs}
        eval_questions |= {q["Question"] for q in ev["Generation_Task"] + ev["Mask_Task"]}
        eval_option_seqs = {tuple(q["Options"].values()) for q in mcqs}
        eval_mcqs = {(q["Question"], tuple(q["Options"].values())) for q in mcqs}
        items = json.loads(row["metadata"])
        assert not {it["Question"] for it in items} & eval_questions
        for it in items:
            if it["Task"] == "Classification":
                seq = tuple(it["Options"][k] for k in "ABCD")
                assert (it["Question"], seq) not in eval_mcqs
                assert seq not in eval_option_seqs


def test_all_text_is_ascii(configs: dict[str, datasets.Dataset]) -> None:
    for name in ALL_CONFIGS:
        text = json.dumps(_rows(configs[name]), ensure_ascii=False)
        assert text.isascii(), name


def test_deterministic_by_seed(twin: Path, tmp_path: Path) -> None:
    kwargs = {"num_profiles": N_PROFILES, "num_celebrities": N_CELEBS, "test_views": VIEWS,
              "num_facts": MAX_FACTS}
    again = build_synthetic_mllmu(tmp_path / "again", seed=0, **kwargs)
    other = build_synthetic_mllmu(tmp_path / "other", seed=1, **kwargs)
    assert _hash_tree(again) == _hash_tree(twin)  # byte-identical parquet files
    hashes = _hash_tree(other)
    assert all(hashes[k] != v for k, v in _hash_tree(twin).items() if k.endswith(".parquet"))
    cache = str(tmp_path / "cache")
    a = datasets.load_dataset(str(twin), "Full_Set", split="train", cache_dir=cache)
    b = datasets.load_dataset(str(other), "Full_Set", split="train", cache_dir=cache)
    assert _rows(a) != _rows(b)
    assert [json.loads(x)["Name"] for x in a["biography"]] != [
        json.loads(x)["Name"] for x in b["biography"]
    ]


def test_idempotent_and_refuses_to_overwrite(twin: Path, tmp_path: Path) -> None:
    kwargs = {"num_profiles": N_PROFILES, "num_celebrities": N_CELEBS, "test_views": VIEWS,
              "num_facts": MAX_FACTS}
    before = {p: p.stat().st_mtime_ns for p in twin.rglob("*")}
    assert build_synthetic_mllmu(twin, seed=0, **kwargs) == twin
    assert {p: p.stat().st_mtime_ns for p in twin.rglob("*")} == before
    marker = json.loads((twin / TWIN.marker).read_text())
    assert marker["num_profiles"] == N_PROFILES and marker["seed"] == 0
    with pytest.raises(FileExistsError, match="built with"):
        build_synthetic_mllmu(twin, seed=1, **kwargs)
    with pytest.raises(FileExistsError, match="built with"):
        build_synthetic_mllmu(twin, seed=0, **{**kwargs, "test_views": 2})
    assert {p: p.stat().st_mtime_ns for p in twin.rglob("*")} == before
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a synthetic"):
        build_synthetic_mllmu(foreign, num_profiles=4, num_celebrities=1)
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign"]  # no temp dirs left


def test_readme_declares_every_config(twin: Path) -> None:
    readme = (twin / "README.md").read_text()
    header = readme.split("---")[1]
    for cfg in ALL_CONFIGS:
        assert f"- config_name: {cfg}\n" in header
        assert f"path: {cfg}/train-*" in header
        assert (twin / cfg / "train-00000-of-00001.parquet").is_file()


def test_portraits_differ_and_views_stay_recognisable() -> None:
    looks = unique_traits(30, random.Random(3))
    portraits = [draw_portrait(t, 64) for t in looks]
    arrs = np.stack([np.asarray(p, dtype=float) for p in portraits])
    assert arrs.shape == (30, 64, 64, 3)
    dist = np.abs(arrs[:, None] - arrs[None]).mean(axis=(2, 3, 4))
    off = dist[~np.eye(30, dtype=bool)]
    assert off.min() > 8.0, off.min()  # every pair clearly different
    own, other, nearest = [], [], 0
    for i, p in enumerate(portraits):
        for v in make_views(p, 3, seed=i):
            d = np.abs(np.asarray(v, dtype=float)[None] - arrs).mean(axis=(1, 2, 3))
            own.append(d[i])
            other.append(np.delete(d, i).mean())
            nearest += int(d.argmin() == i)
    assert np.mean(own) < 0.5 * np.mean(other)
    assert nearest / 90 >= 0.9
    # views are deterministic in their seed and differ between seeds
    a, b = make_views(portraits[0], 2, seed=7), make_views(portraits[0], 2, seed=7)
    assert [x.tobytes() for x in a] == [x.tobytes() for x in b]
    assert make_views(portraits[0], 1, seed=8)[0].tobytes() != a[0].tobytes()


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_profiles"):
        build_synthetic_mllmu(tmp_path / "x", num_profiles=1)
    with pytest.raises(ValueError):
        build_synthetic_mllmu(tmp_path / "y", num_profiles=4, test_views=0)
    assert not (tmp_path / "x").exists()


def test_build_of_an_older_generator_is_replaced(tmp_path: Path, monkeypatch) -> None:
    from unlearn.data.synthetic import build as synthetic  # where synthetic_args reads it

    root = build_synthetic_mllmu(tmp_path / "twin", num_profiles=4, num_celebrities=1)
    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
    build_synthetic_mllmu(root, num_profiles=4, num_celebrities=1)
    marker = json.loads((root / TWIN.marker).read_text())
    assert marker["version"] == synthetic.GENERATOR_VERSION
    with pytest.raises(FileExistsError, match="built with"):  # other arguments: still refused
        build_synthetic_mllmu(root, num_profiles=5, num_celebrities=1)


def _content_digest(root: Path) -> str:
    """Every config's rows without the encoded images (PNG bytes follow the Pillow version)."""
    import pyarrow.parquet as pq

    h = hashlib.sha256()
    for cfg in CONFIGS:
        table = pq.read_table(root / cfg / SHARD)
        table = table.drop([c for c in ("image", "images") if c in table.column_names])
        h.update(json.dumps(table.to_pylist(), sort_keys=True).encode())
    return h.hexdigest()[:16]


def test_four_facts_rebuild_the_v5_world(tmp_path: Path) -> None:
    """num_facts=4 is twin v5 item for item (digest taken from the v5 generator), so the
    tests' small worlds, and the numbers checked on them, did not move when facts were added."""
    small = build_synthetic_mllmu(tmp_path / "v5", num_profiles=6, num_celebrities=2,
                                  num_facts=4)
    assert _content_digest(small) == "c437809945890704"
    with pytest.raises(ValueError, match="num_facts must be in 4..10"):
        build_synthetic_mllmu(tmp_path / "bad", num_profiles=4, num_facts=11)


def test_twin_config_object_recipe_and_build(tmp_path: Path) -> None:
    """MLLMUTwin is the same recipe and the same build as the two functions it wraps."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from unlearn.data.mllmu import MLLMUBench

    twin = MLLMUTwin(num_profiles=8, num_celebrities=2, seed=1, test_views=2)
    assert twin.recipe == {
        "generator": "unlearn.data.synthetic", "version": 5, "num_profiles": 8,
        "num_celebrities": 2, "seed": 1, "image_size": 64, "test_views": 2,
    }  # fmt: skip
    assert twin.recipe == synthetic_args(num_profiles=8, num_celebrities=2, seed=1, test_views=2)
    assert MLLMUTwin(num_profiles=8, num_facts=6).recipe["num_facts"] == 6
    # the shipped config's keys are the constructor's arguments
    conf = OmegaConf.load(Path(__file__).parents[1] / "conf/data/synthetic_mllmu.yaml").synthetic
    assert conf._target_ == "unlearn.data.synthetic.MLLMUTwin"
    made = instantiate(conf)
    args = {k: v for k, v in conf.items() if k != "_target_"}
    assert made.recipe == synthetic_args(**args) and made.recipe["num_profiles"] == 50

    root = twin.build(tmp_path / "twin")
    assert root == tmp_path / "twin"
    assert json.loads((root / TWIN.marker).read_text()) == twin.recipe
    bench = MLLMUBench(str(root), forget_ratio=10, cache_dir=str(tmp_path / "hf"))
    assert (len(bench.forget_ids), len(bench.retain_ids)) == (1, 7)  # round(10% of 8) = 1
    # 4 facts: 5 image-text + 4 text-only questions in each of 3 tasks = 27 per profile
    assert (len(bench.forget()), len(bench.celebrity())) == (27, 2 * 27)
    assert twin.build(root) == root  # same recipe: reused
    with pytest.raises(FileExistsError, match="built with"):
        MLLMUTwin(num_profiles=9, num_celebrities=2, seed=1, test_views=2).build(root)
    with pytest.raises(ValueError, match="num_profiles must be >= 2, got 1"):
        MLLMUTwin(num_profiles=1)
