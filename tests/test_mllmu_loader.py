"""MLLMU-Bench loader: the twin and hand-written real-schema copies go through one code path."""

from __future__ import annotations

import io
import json
import random
import shutil
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pytest
from datasets import Dataset, Features, Image, List, Value
from PIL import Image as PILImage

from unlearn.data.hub import load_config
from unlearn.data.images import to_pil
from unlearn.data.mllmu import (
    MLLMUBench,
    eval_samples,
    text_qa,
    train_samples,
)
from unlearn.data.synthetic import ICU_TRAIN_INSTRUCTIONS, build_synthetic_mllmu

N_PROFILES, N_CELEBS = 20, 4
PER_PROFILE = {
    ("classification", "image_text"): 5,
    ("classification", "text_only"): 4,
    ("cloze", "image_text"): 5,  # twin v5: every fact asked in every task
    ("cloze", "text_only"): 4,
    ("generation", "image_text"): 5,
    ("generation", "text_only"): 4,
}
FT_PER_PROFILE = {
    ("generation", "image_text"): 10,
    ("classification", "image_text"): 15,
    ("cloze", "image_text"): 10,
    ("generation", "text_only"): 8,
    ("classification", "text_only"): 12,
    ("cloze", "text_only"): 8,
}

S = Value("string")
MCQ = List({"Correct_Answer": S, "Options": {"A": S, "B": S, "C": S, "D": S}, "Question": S})
ITEMS = List({"Ground_Truth": S, "Question": S, "Type": S})
TASKS = {
    "Classification_Task": {"Image_Textual_Questions": MCQ, "Pure_Text_Questions": MCQ},
    "Generation_Task": ITEMS,
    "Mask_Task": ITEMS,
}


def _counts(samples: list) -> Counter:
    return Counter((s.task, s.modality) for s in samples)


def _times(n: int, per: dict) -> Counter:
    return Counter({k: v * n for k, v in per.items()})


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("hf_cache"))


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("twin") / "mllmu"
    return build_synthetic_mllmu(root, num_profiles=N_PROFILES, num_celebrities=N_CELEBS,
                                 num_facts=4)


@pytest.fixture(scope="module")
def bench(twin: Path, cache: str) -> MLLMUBench:
    return MLLMUBench(str(twin), forget_ratio=15, seed=0, cache_dir=cache)


# --------------------------------------------------------------------------- the twin
def test_bench_ids_partition_full_set(bench: MLLMUBench, twin: Path, cache: str) -> None:
    full = list(load_config(str(twin), "Full_Set", cache_dir=cache)["ID"])
    assert len(bench.forget_ids) == 3 and len(bench.retain_ids) == 17
    assert not set(bench.forget_ids) & set(bench.retain_ids)
    assert sorted(bench.forget_ids + bench.retain_ids) == sorted(full)


def test_eval_split_counts(bench: MLLMUBench) -> None:
    forget, test, retain, celeb = bench.forget(), bench.test(), bench.retain(), bench.celebrity()
    assert _counts(forget) == _times(3, PER_PROFILE)
    assert _counts(test) == _times(3, PER_PROFILE)
    assert _counts(retain) == _times(17, PER_PROFILE)
    assert _counts(celeb) == _times(N_CELEBS, PER_PROFILE)
    assert {s.profile_id for s in forget} == set(bench.forget_ids)
    assert {s.profile_id for s in test} == set(bench.forget_ids)
    assert {s.profile_id for s in retain} == set(bench.retain_ids)
    assert {s.profile_id for s in celeb} == {f"C{i}" for i in range(1, N_CELEBS + 1)}
    for samples, split in ((forget, "forget"), (test, "test"), (retain, "retain")):
        assert {s.split for s in samples} == {split}
    assert {s.split for s in celeb} == {"celebrity"}
    for s in forget + celeb:
        if s.modality == "image_text":
            assert s.has_image and s.image.size == (64, 64) and s.image.mode == "RGB"
        else:
            assert s.image is None and not s.has_image
        assert (s.options is not None) == (s.task == "classification")
        assert s.meta["name"]


def test_eval_values_match_rows(bench: MLLMUBench) -> None:
    row = bench.dataset(bench.forget_config).select_columns(
        ["ID", "biography", "Classification_Task", "Generation_Task", "Mask_Task"]
    )[0]
    samples = [s for s in bench.forget() if s.profile_id == row["ID"]]
    mcqs = row["Classification_Task"]
    keys = (("Image_Textual_Questions", "image_text"), ("Pure_Text_Questions", "text_only"))
    expected = [
        (q["Question"], q["Correct_Answer"], "classification", mod, q["Options"])
        for key, mod in keys
        for q in mcqs[key]
    ]
    for column, task in (("Mask_Task", "cloze"), ("Generation_Task", "generation")):
        for q in row[column]:
            mod = "image_text" if q["Type"] == "Image_Textual" else "text_only"
            expected.append((q["Question"], q["Ground_Truth"], task, mod, None))
    got = [(s.question, s.answer, s.task, s.modality, s.options) for s in samples]
    assert got == expected
    name = json.loads(row["biography"])["Name"]
    assert all(s.meta == {"name": name} for s in samples)
    name_q = samples[0]
    assert name_q.question == "What is the name of the person in the image?"
    assert name_q.options[name_q.answer] == name
    cloze = [s for s in samples if s.task == "cloze"]
    assert all("__" in s.question for s in cloze)


def test_test_split_picks_seeded_views(bench: MLLMUBench, twin: Path, cache: str) -> None:
    test_ds = load_config(str(twin), "Test_Set", cache_dir=cache)
    ids = list(test_ds["ID"])
    rows = [i for i, x in enumerate(ids) if x in set(bench.forget_ids)]
    rng = random.Random(bench.seed)
    want = {ids[i]: rng.randrange(3) for i in rows}
    samples = bench.test()
    for s in samples:
        assert s.meta["view"] == want[s.profile_id]
    first = next(s for s in samples if s.modality == "image_text")
    view = test_ds[ids.index(first.profile_id)]["images"][want[first.profile_id]]
    assert np.array_equal(np.asarray(first.image), np.asarray(view.convert("RGB")))
    other = MLLMUBench(str(twin), forget_ratio=15, seed=5, cache_dir=cache).test()
    rng = random.Random(5)
    assert [s.meta["view"] for s in other[:: sum(PER_PROFILE.values())]] == [
        rng.randrange(3) for _ in rows
    ]


def test_training_sets(bench: MLLMUBench) -> None:
    def facts_only(samples: list) -> list:  # without the ICU practice items (test_vgid.py)
        return [s for s in samples if not s.question.startswith(ICU_TRAIN_INSTRUCTIONS)]

    ft = facts_only(bench.finetune())
    assert _counts(ft) == _times(N_PROFILES + N_CELEBS, FT_PER_PROFILE)
    assert len(ft) == 63 * (N_PROFILES + N_CELEBS)
    forget, retain = bench.forget_train(), facts_only(bench.retain_train())
    assert _counts(forget) == _times(3, FT_PER_PROFILE)
    assert _counts(retain) == _times(17, FT_PER_PROFILE)
    assert {s.profile_id for s in forget} == set(bench.forget_ids)
    assert {s.profile_id for s in retain} == set(bench.retain_ids)
    assert {s.split for s in ft} == {"finetune"} and {s.split for s in forget} == {"forget"}
    mcq = next(s for s in forget if s.task == "classification")
    assert set(mcq.options) == set("ABCD") and mcq.answer in mcq.options
    gen = next(s for s in forget if s.task == "generation" and s.modality == "text_only")
    name = " ".join(gen.answer.split()[:2])  # "Ava Abbott was born in 1975."
    assert gen.image is None and name in gen.question and "person" not in gen.answer


def test_fingerprint_is_content_based(bench: MLLMUBench, twin: Path, tmp_path: Path) -> None:
    copy = build_synthetic_mllmu(
        tmp_path / "copy", num_profiles=N_PROFILES, num_celebrities=N_CELEBS, num_facts=4
    )
    other = build_synthetic_mllmu(
        tmp_path / "other", num_profiles=N_PROFILES, num_celebrities=N_CELEBS, seed=1,
        num_facts=4,
    )
    cache = str(tmp_path / "cache")
    fp = bench.fingerprint()
    assert len(fp) == 16 and fp == bench.fingerprint()
    assert MLLMUBench(str(copy), forget_ratio=15, cache_dir=cache).fingerprint() == fp
    assert MLLMUBench(str(other), forget_ratio=15, cache_dir=cache).fingerprint() != fp
    assert MLLMUBench(str(twin), forget_ratio=5, cache_dir=cache).fingerprint() != fp
    assert bench.fingerprint("finetune") != fp
    five = MLLMUBench(str(twin), forget_ratio=5, seed=3, cache_dir=cache)
    assert five.fingerprint("finetune") == bench.fingerprint("finetune")
    assert five.configs_fingerprint(["Test_Set"]) != bench.configs_fingerprint(["Test_Set"])


def test_rebuilt_folder_is_not_served_from_stale_cache(tmp_path: Path) -> None:
    root, cache = tmp_path / "bench", str(tmp_path / "cache")
    build_synthetic_mllmu(root, num_profiles=6, num_celebrities=1)
    assert len(load_config(str(root), "Full_Set", cache_dir=cache)) == 6
    shutil.rmtree(root)
    build_synthetic_mllmu(root, num_profiles=9, num_celebrities=1)
    assert len(load_config(str(root), "Full_Set", cache_dir=cache)) == 9


def test_errors_name_config_and_source(twin: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'forget_7'.*mllmu"):
        load_config(str(twin), "forget_7")
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_config(str(tmp_path / "nowhere"), "Full_Set")
    with pytest.raises(ValueError, match=r"\(5, 10, 15\)"):
        MLLMUBench(str(twin), forget_ratio=20)


# --------------------------------------------------------------------------- real schema
def _png(colour: tuple[int, int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    PILImage.new(mode, (8, 8), colour if mode == "RGB" else (*colour, 255)).save(buf, "PNG")
    return buf.getvalue()


def _eval_row(pid: str, name: str, colour: tuple[int, int, int]) -> dict:
    mcq = {"Correct_Answer": "B", "Options": {"A": "x", "B": name, "C": "y", "D": "z"}}
    return {
        "ID": pid,
        "biography": json.dumps({"Name": name, "Born": "1970", "Employment": "baker"}),
        "question": "q",
        "answer": "a",
        "Classification_Task": {
            "Image_Textual_Questions": [{**mcq, "Question": "Who is in the image?"}],
            "Pure_Text_Questions": [
                {**mcq, "Question": f"Is {name} a baker?", "Correct_Answer": " c"},
                {**mcq, "Question": f"Where does {name} live?"},
            ],
        },
        "Generation_Task": [
            {"Ground_Truth": f"It is {name}.", "Question": "Who?", "Type": "Image_Textual"},
        ],
        "Mask_Task": [
            {"Ground_Truth": "1970", "Question": f"{name} was born in __.", "Type": "Pure_Text"},
            {"Ground_Truth": name, "Question": "This is __.", "Type": "Image_Textual"},
        ],
        "_colour": colour,
    }


PEOPLE = [("11", "Ann Bell", (255, 0, 0)), ("12", "Bo Chen", (0, 255, 0))]
PEOPLE += [("13", "Cy Dorn", (0, 0, 255))]


def _write_config(
    root: Path, name: str, rows: list[dict], features: Features, shards: int = 1
) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    ds = Dataset.from_list(rows, features=features)
    for k in range(shards):
        part = ds.shard(shards, k, contiguous=True)
        part.to_parquet(str(folder / f"train-{k:05d}-of-{shards:05d}.parquet"))


def write_real_copy(root: Path) -> Path:
    """A hand-written local copy in the hub layout with the official quirks, at ``root``.

    ``forget_5`` has no ``Directory`` column (early card revision); images are byte dicts
    (``path`` may be set or not); ``Test_Set`` is two shards; ``ft_Data`` items carry only
    ``Question``/``Answer`` (no text-only items), as in the real release.
    """
    common = {"ID": S, "Directory": S, "biography": S, "question": S, "answer": S, **TASKS}
    eval_feats = Features({"image": Image(), **common})
    rows = []
    for pid, name, colour in PEOPLE:
        row = _eval_row(pid, name, colour)
        del row["_colour"]
        path = f"{pid}.png" if pid == "12" else None
        rows.append({**row, "image": {"bytes": _png(colour), "path": path}, "Directory": pid})
    no_dir = Features({k: v for k, v in eval_feats.items() if k != "Directory"})
    forget = [{k: v for k, v in rows[0].items() if k != "Directory"}]
    _write_config(root, "forget_5", forget, no_dir)
    _write_config(root, "retain_95", rows[1:], eval_feats)
    _write_config(root, "Full_Set", rows, eval_feats)
    celeb = _eval_row("900", "Dee Evans", (9, 9, 9))
    del celeb["_colour"]
    celeb |= {"image": {"bytes": _png((9, 9, 9), "RGBA"), "path": None}, "Directory": "c"}
    _write_config(root, "Retain_Set", [celeb], eval_feats)
    test_feats = Features({"images": List(Image()), **common})
    test_rows = [
        {
            **{k: v for k, v in r.items() if k != "image"},
            "images": [{"bytes": _png((10 * i, 0, 0)), "path": None} for i in range(4)],
        }
        for r in rows
    ]
    _write_config(root, "Test_Set", test_rows, test_feats, shards=2)
    ft = [
        {
            "image": r["image"],
            "ID": r["ID"],
            "metadata": json.dumps(
                [
                    {"Question": "Who is this?", "Answer": f"This is {name}."},
                    {"Question": "Born?", "Answer": "1970"},
                ]
            ),
        }
        for r, (_, name, _) in zip(rows, PEOPLE, strict=True)
    ]
    _write_config(root, "ft_Data", ft, Features({"image": Image(), "ID": S, "metadata": S}))
    cfgs = ["Full_Set", "forget_5", "retain_95", "Test_Set", "Retain_Set", "ft_Data"]
    header = "".join(
        f"- config_name: {c}\n  data_files:\n  - split: train\n    path: {c}/train-*\n"
        for c in cfgs
    )
    (root / "README.md").write_text(f"---\nconfigs:\n{header}---\n# copy\n")
    return root


@pytest.fixture(scope="module")
def real_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_real_copy(tmp_path_factory.mktemp("real") / "MLLMU-Bench")


def test_real_schema_copy(real_copy: Path, cache: str) -> None:
    bench = MLLMUBench(str(real_copy), forget_ratio=5, seed=0, cache_dir=cache)
    assert bench.forget_ids == ["11"] and bench.retain_ids == ["12", "13"]
    forget = bench.forget()  # no Directory column
    assert [(s.task, s.modality, s.question, s.answer) for s in forget] == [
        ("classification", "image_text", "Who is in the image?", "B"),
        ("classification", "text_only", "Is Ann Bell a baker?", "C"),
        ("classification", "text_only", "Where does Ann Bell live?", "B"),
        ("cloze", "text_only", "Ann Bell was born in __.", "1970"),
        ("cloze", "image_text", "This is __.", "Ann Bell"),
        ("generation", "image_text", "Who?", "It is Ann Bell."),
    ]
    assert forget[0].options == {"A": "x", "B": "Ann Bell", "C": "y", "D": "z"}
    assert forget[0].image.getpixel((0, 0)) == (255, 0, 0)
    assert forget[1].image is None and forget[3].image is None
    assert all(s.meta == {"name": "Ann Bell"} for s in forget)
    retain = bench.retain()
    assert [s.profile_id for s in retain] == ["12"] * 6 + ["13"] * 6
    assert retain[0].image.getpixel((3, 3)) == (0, 255, 0)
    celeb = bench.celebrity()
    assert celeb[0].image.mode == "RGB" and celeb[0].image.getpixel((0, 0)) == (9, 9, 9)
    test = bench.test()  # two shards, filtered to the forget ID
    assert {s.profile_id for s in test} == {"11"} and len(test) == 6
    view = random.Random(0).randrange(4)
    assert test[0].meta["view"] == view
    assert test[0].image.getpixel((0, 0)) == (10 * view, 0, 0)
    ft = bench.finetune()
    assert [(s.profile_id, s.task, s.modality, s.answer) for s in ft[:2]] == [
        ("11", "qa", "image_text", "This is Ann Bell."),
        ("11", "qa", "image_text", "1970"),
    ]
    assert len(ft) == 6 and ft[0].image.getpixel((0, 0)) == (255, 0, 0)
    assert [s.profile_id for s in bench.forget_train()] == ["11", "11"]
    assert [s.profile_id for s in bench.retain_train()] == ["12", "12", "13", "13"]


def test_pure_text_qa_from_full_set_of_a_real_schema_copy(real_copy: Path, cache: str) -> None:
    """MMUnlearner's text-only preserve data: Full_Set's pure-text MCQs as question -> the
    correct option's text, no image; the real ft_Data has no text-only item."""
    bench = MLLMUBench(str(real_copy), forget_ratio=5, seed=0, cache_dir=cache)
    assert all(s.modality == "image_text" for s in bench.forget_train() + bench.retain_train())
    forget = bench.forget_text_qa()
    assert [(s.profile_id, s.question, s.answer, s.task, s.modality, s.split, s.image)
            for s in forget] == [
        ("11", "Is Ann Bell a baker?", "y", "qa", "text_only", "forget", None),  # " c" -> C
        ("11", "Where does Ann Bell live?", "Ann Bell", "qa", "text_only", "forget", None),
    ]
    assert all(s.options is None and s.meta == {"name": "Ann Bell"} for s in forget)
    retain = bench.retain_text_qa()
    assert [(s.profile_id, s.question, s.answer) for s in retain] == [
        ("12", "Is Bo Chen a baker?", "y"), ("12", "Where does Bo Chen live?", "Bo Chen"),
        ("13", "Is Cy Dorn a baker?", "y"), ("13", "Where does Cy Dorn live?", "Cy Dorn"),
    ]
    assert {s.split for s in retain} == {"retain"}
    row = _eval_row("7", "Ed Fox", (0, 0, 0))
    row["Classification_Task"]["Pure_Text_Questions"][0]["Correct_Answer"] = "E"
    with pytest.raises(ValueError, match=r"'Is Ed Fox a baker\?'.*'E' is not one of"):
        text_qa([row], "forget")


def test_pure_text_qa_of_the_twin_are_its_pure_text_mcqs(bench: MLLMUBench) -> None:
    mcqs = [s for s in bench.forget() if s.task == "classification" and s.modality == "text_only"]
    assert len(mcqs) == 3 * PER_PROFILE["classification", "text_only"]
    assert [(s.profile_id, s.question, s.answer, s.image) for s in bench.forget_text_qa()] == [
        (s.profile_id, s.question, s.options[s.answer], None) for s in mcqs
    ]
    retain = bench.retain_text_qa()
    assert len(retain) == 17 * PER_PROFILE["classification", "text_only"]
    assert {s.profile_id for s in retain} == set(bench.retain_ids)


def test_decoded_pil_rows_give_same_samples(real_copy: Path, cache: str) -> None:
    ds = load_config(str(real_copy), "Full_Set", cache_dir=cache)
    decoded = list(ds)  # rows as datasets decodes them: PIL images
    assert isinstance(decoded[0]["image"], PILImage.Image)
    a, b = eval_samples(ds, "x"), eval_samples(decoded, "x")
    assert [(s.question, s.answer, s.modality) for s in a] == [
        (s.question, s.answer, s.modality) for s in b
    ]
    assert all(
        (x.image is None and y.image is None) or x.image.tobytes() == y.image.tobytes()
        for x, y in zip(a, b, strict=True)
    )
    ft_rows = list(load_config(str(real_copy), "ft_Data", cache_dir=cache))
    assert len(train_samples(ft_rows)) == 6


def test_image_given_by_path_only(tmp_path: Path) -> None:
    file = tmp_path / "face.png"
    file.write_bytes(_png((1, 2, 3)))
    row = _eval_row("7", "Ed Fox", (1, 2, 3))
    row["image"] = {"bytes": None, "path": str(file)}
    samples = eval_samples([row], "forget")
    assert samples[0].image.getpixel((0, 0)) == (1, 2, 3)


def test_forget_retain_overlap_is_rejected(real_copy: Path, tmp_path: Path, cache: str) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(real_copy, bad)
    shutil.rmtree(bad / "retain_95")
    shutil.copytree(real_copy / "Full_Set", bad / "retain_95")
    with pytest.raises(ValueError, match=r"share 1 IDs.*'11'"):
        MLLMUBench(str(bad), forget_ratio=5, cache_dir=cache)


def test_unknown_type_and_task_are_errors() -> None:
    row = _eval_row("1", "Al Bo", (0, 0, 0))
    row["image"] = {"bytes": _png((0, 0, 0)), "path": None}
    row["Mask_Task"][0]["Type"] = "Video"
    with pytest.raises(ValueError, match="Video"):
        eval_samples([row], "forget")
    ft = {"image": None, "ID": "1"}
    ft["metadata"] = json.dumps([{"Question": "q", "Answer": "a", "Task": "Essay"}])
    with pytest.raises(ValueError, match="Essay"):
        train_samples([ft])
    text_only = {"ID": "1", "metadata": [{"Question": "q", "Answer": "a", "Type": "Pure_Text"}]}
    (s,) = train_samples([text_only])
    assert (s.task, s.modality, s.image) == ("qa", "text_only", None)


def test_to_pil_accepts_every_stored_form(tmp_path: Path) -> None:
    data = _png((5, 6, 7))
    file = tmp_path / "img.png"
    file.write_bytes(data)
    rgba = PILImage.new("RGBA", (4, 4), (5, 6, 7, 255))
    forms = [
        rgba,
        {"bytes": data, "path": None},
        {"bytes": data, "path": "ignored-when-bytes.png"},
        {"bytes": None, "path": str(file)},
        data,
        str(file),
        file,
    ]
    for form in forms:
        img = to_pil(form)
        assert img.mode == "RGB" and img.getpixel((0, 0)) == (5, 6, 7)
    with pytest.raises(ValueError, match="neither"):
        to_pil({"bytes": None, "path": None})
    with pytest.raises(TypeError):
        to_pil(3)
    assert datasets.Image().decode_example({"bytes": data, "path": None}).size == (8, 8)
