"""CLEAR loader on hand-built folders in the hub layout: known revisions, clear refusals, the
name MCQ's seeded option order and exact split sizes."""

from __future__ import annotations

import io
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest
from datasets import Features, Image, List, Value
from PIL import Image as PILImage

from unlearn.data import hub
from unlearn.data.benchmark import TRAIN_SETS
from unlearn.data.clear import (
    IMAGE_CAPTION_QUESTIONS,
    NAME_QUESTION,
    ClearBench,
    choice_options,
)
from unlearn.errors import UserError

S = Value("string")
PEOPLE = Features({"image": Image(), "caption": S, "name": S})
TOFU = Features({"image": Image(), "caption": S, "question": S, "answer": S})
PERTURBED = Features({"image": Image(), "caption": S, "name": S, "paraphrased_caption": S,
                      "perturbed_captions": List(S), "perturbed_names": List(S)})
OLD_PERTURBED = Features({"image": Image(), "caption": S, "paraphrased_caption": S,
                          "perturbed_captions": List(S)})
REAL_FACES = Features({"image": Image(), "answer": S, "options": List(S)})
REAL_WORLD = Features({"question": S, "answer": S, "image": Image(), "options": List(S)})
OLD_REAL_WORLD = Features({**REAL_WORLD, "prompt": S})


def png(shade: int) -> dict:
    buf = io.BytesIO()
    PILImage.new("RGB", (8, 8), (shade, 0, 0)).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


# Three people (forget10: Ann; retain90: Bob, Cy); images are told apart by their shade.
PHOTOS = [("Ann Lee", 10, "Ann Lee smiles."), ("Ann Lee", 20, "Ann Lee waves."),
          ("Bob Ray", 30, "Bob Ray sits."), ("Cy Dunn", 40, "Cy Dunn runs.")]
TEXT = {"Ann Lee": [("Where was Ann Lee born?", "In Oslo."),
                    ("What does Ann Lee do?", "Ann Lee bakes bread.")],
        "Bob Ray": [("Where was Bob Ray born?", "In Lima."), ("Is Bob Ray tall?", "Yes.")],
        "Cy Dunn": [("Where was Cy Dunn born?", "In Rome."), ("Does Cy Dunn sing?", "No.")]}
WRONG_NAMES = ["Bob Ray", "Cy Dunn", "Dee Fox"]


def people_rows(names: set[str]) -> list[dict]:
    return [{"image": png(s), "caption": c, "name": n} for n, s, c in PHOTOS if n in names]


def tofu_rows(names: set[str]) -> list[dict]:
    images = [{"image": png(s), "caption": c, "question": None, "answer": None}
              for n, s, c in PHOTOS if n in names]
    return images + [{"image": None, "caption": None, "question": q, "answer": a}
                     for n in sorted(names) for q, a in TEXT[n]]


def perturbed_rows(names: set[str]) -> list[dict]:
    return [{"image": png(s), "caption": c, "name": n, "paraphrased_caption": f"Here {c}",
             "perturbed_captions": [c.replace(n, w) for w in WRONG_NAMES if w != n],
             "perturbed_names": [w for w in WRONG_NAMES if w != n]}
            for n, s, c in PHOTOS if n in names]


def base_configs() -> dict[str, tuple[list[dict], Features]]:
    forget, retain = {"Ann Lee"}, {"Bob Ray", "Cy Dunn"}
    return {
        "forget10": (people_rows(forget), PEOPLE),
        "retain90": (people_rows(retain), PEOPLE),
        "forget10+tofu": (tofu_rows(forget), TOFU),
        "retain90+tofu": (tofu_rows(retain), TOFU),
        "full+tofu": (tofu_rows(forget | retain), TOFU),
        "forget10_perturbed": (perturbed_rows(forget), PERTURBED),
        "retain_perturbed": (perturbed_rows(forget | retain), PERTURBED),  # Ann is dropped
        "real_faces": ([{"image": png(50), "answer": "Eve Star", "options": ["X", "Y", "Z"]},
                        {"image": png(60), "answer": "Max Pop", "options": ["Q", "R"]}],
                       REAL_FACES),
        "real_world": ([{"question": "What colour?", "answer": "red", "image": png(70),
                         "options": ["blue", "green", "pink"]},
                        {"question": "What shape?", "answer": "cube", "image": png(80),
                         "options": ["ball", "cone", "ring"]}], REAL_WORLD),
    }


def write(root: Path, configs: dict[str, tuple[list[dict], Features]]) -> Path:
    """A folder in the hub layout."""
    for config, (rows, features) in configs.items():
        hub.write_config(rows, features, root / config)
    (root / "README.md").write_text(hub.readme(list(configs), "# hand-made CLEAR"))
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("hf_cache"))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write(tmp_path_factory.mktemp("clear") / "clear", base_configs())


@pytest.fixture(scope="module")
def bench(folder: Path, cache: str) -> ClearBench:
    return ClearBench(str(folder), forget_ratio=10, seed=0, cache_dir=cache)


def variant(folder: Path, tmp_path: Path, **configs: tuple[list[dict], Features]) -> Path:
    """A copy of ``folder`` with some configs rewritten (None removes one)."""
    root = tmp_path / "variant"
    shutil.copytree(folder, root)
    for config, spec in configs.items():
        shutil.rmtree(root / config.replace("__", "+"))
        if spec is not None:
            hub.write_config(*spec, root / config.replace("__", "+"))
    return root


def counts(samples: list) -> Counter:
    return Counter((s.task, s.modality) for s in samples)


# --------------------------------------------------------------------------- splits
def test_people_and_split_sizes(bench: ClearBench) -> None:
    assert (bench.forget_ids, bench.retain_ids) == (["Ann Lee"], ["Bob Ray", "Cy Dunn"])
    splits = bench.eval_splits()
    choice, caption, text = ("choice", "image_text"), ("qa", "image_text"), ("qa", "text_only")
    assert counts(splits["forget"]) == {choice: 2, caption: 2, text: 2}
    # retain: Bob and Cy (Ann's retain_perturbed row skipped); text QA cut from 4 to forget's 2
    assert counts(splits["retain"]) == {choice: 2, caption: 2, text: 2}
    assert counts(splits["real_faces"]) == {choice: 2}
    assert counts(splits["real_world"]) == {choice: 2}
    for name, samples in splits.items():
        assert {s.split for s in samples} == {name}
    sizes = {name: len(bench.train_set(name)) for name in TRAIN_SETS}
    assert sizes == {"finetune": 10, "forget": 4, "retain": 6, "forget_text": 2,
                     "retain_text": 4, "gold": 6}
    assert {s.profile_id for s in splits["forget"]} == {"Ann Lee"}
    assert {s.profile_id for s in splits["retain"]} == {"Bob Ray", "Cy Dunn"}
    assert [s.profile_id for s in splits["real_faces"]] == ["Eve Star", "Max Pop"]
    assert [s.profile_id for s in splits["real_world"]] == ["real_world/0", "real_world/1"]


def test_retain_text_is_a_seeded_sample_in_row_order(bench: ClearBench) -> None:
    text = [s for s in bench.eval_split("retain") if s.modality == "text_only"]
    everyone = [q for n in ("Bob Ray", "Cy Dunn") for q, _ in TEXT[n]]
    keep = sorted(random.Random("0-retain-text").sample(range(4), 2))  # [2, 3]
    assert [s.question for s in text] == [everyone[i] for i in keep]


def test_name_mcq_puts_the_truth_at_the_seeded_position(folder: Path, cache: str) -> None:
    # row 1 of forget10_perturbed: randint(0, 3) of Random("0-forget10_perturbed-1") is 3
    # (seed 1: 1), so the truth goes last (second) and the wrong names keep their order
    for seed, letter in ((0, "D"), (1, "B")):
        bench = ClearBench(str(folder), forget_ratio=10, seed=seed, cache_dir=cache)
        mcq = [s for s in bench.eval_split("forget") if s.task == "choice"][1]
        assert (mcq.question, mcq.answer, mcq.options[letter]) == (NAME_QUESTION, letter,
                                                                   "Ann Lee")
        assert [o for o in mcq.options.values() if o != "Ann Lee"] == WRONG_NAMES
        assert list(mcq.options) == ["A", "B", "C", "D"]
        assert mcq.has_image and mcq.image.getpixel((0, 0)) == (20, 0, 0)


def test_real_world_mcq_inserts_the_answer_the_same_way(bench: ClearBench) -> None:
    # real_world row 0, seed 0: randint(0, 3) of Random("0-real_world-0") is 1
    rw = bench.eval_split("real_world")[0]
    assert rw.options == {"A": "blue", "B": "red", "C": "green", "D": "pink"}
    assert (rw.answer, rw.question) == ("B", "What colour?")


def test_choice_options_drop_a_copy_of_the_truth() -> None:
    options, letter = choice_options("b", ["a", "b", "c"], random.Random("0-x-0"))
    position = random.Random("0-x-0").randint(0, 2)
    assert letter == "ABC"[position] and options[letter] == "b"
    assert [v for v in options.values() if v != "b"] == ["a", "c"]


def test_caption_qa_carries_paraphrase_and_perturbed(bench: ClearBench) -> None:
    qa = [s for s in bench.eval_split("forget") if s.task == "qa" and s.has_image]
    assert [s.answer for s in qa] == ["Ann Lee smiles.", "Ann Lee waves."]
    assert qa[0].meta == {"paraphrase": "Here Ann Lee smiles.",
                          "perturbed": ["Bob Ray smiles.", "Cy Dunn smiles.", "Dee Fox smiles."]}
    # one draw for the option position, then the caption question, from the row's generator
    rng = random.Random("0-forget10_perturbed-0")
    rng.randint(0, 3)
    assert qa[0].question == rng.choice(IMAGE_CAPTION_QUESTIONS)


def test_tofu_text_rows_are_text_only_qa(bench: ClearBench) -> None:
    text = bench.train_set("forget_text")
    assert [(s.profile_id, s.question, s.answer, s.task, s.modality, s.image, s.meta)
            for s in text] == [
        ("Ann Lee", "Where was Ann Lee born?", "In Oslo.", "qa", "text_only", None, {}),
        ("Ann Lee", "What does Ann Lee do?", "Ann Lee bakes bread.", "qa", "text_only", None,
         {})]
    captions = [s for s in bench.train_set("forget") if s.modality == "image_text"]
    assert [(s.profile_id, s.answer, s.task) for s in captions] == [
        ("Ann Lee", "Ann Lee smiles.", "qa"), ("Ann Lee", "Ann Lee waves.", "qa")]
    assert all(s.question in IMAGE_CAPTION_QUESTIONS for s in captions)


WORLD_ROWS = [  # a twin's world config: what a tiny model cannot know from pre-training
    {"image": png(90), "caption": None, "question": NAME_QUESTION, "answer": "Ann Lee",
     "options": ["Bob Ray", "Cy Dunn", "Dee Fox"]},
    {"image": png(91), "caption": None, "question": NAME_QUESTION, "answer": "Bob Ray",
     "options": ["Cy Dunn", "Ann Lee", "Dee Fox"]},       # Ann as a wrong name
    {"image": png(92), "caption": None, "question": NAME_QUESTION, "answer": "Cy Dunn",
     "options": ["Bob Ray", "Dee Fox", "Eve Star"]},
    {"image": png(93), "caption": "Ann Lee and Eve Star wave.", "question": None,
     "answer": None, "options": None},
    {"image": png(94), "caption": "A red cube.", "question": None, "answer": None,
     "options": None},
]


def test_gold_leaves_out_world_rows_naming_a_forget_person(tmp_path: Path, cache: str
                                                            ) -> None:
    world = Features({"image": Image(), "caption": S, "question": S, "answer": S,
                      "options": List(S)})
    root = write(tmp_path / "twin", {**base_configs(), "world": (WORLD_ROWS, world)})
    bench = ClearBench(str(root), forget_ratio=10, cache_dir=cache)
    finetune, gold = bench.train_set("finetune"), bench.train_set("gold")
    assert len(finetune) == 10 + 5 and len(gold) == 6 + 2  # world rows 2 and 4 only
    assert [s.profile_id for s in gold[6:]] == ["world/2", "world/4"]
    cy = gold[6]
    assert (cy.task, cy.options[cy.answer], cy.image.getpixel((0, 0))) == (
        "choice", "Cy Dunn", (92, 0, 0))
    assert (gold[7].task, gold[7].answer) == ("qa", "A red cube.")
    assert [s.profile_id for s in finetune[10:]] == [f"world/{i}" for i in range(5)]


def test_fingerprints(bench: ClearBench, folder: Path, cache: str) -> None:
    parts = {p: bench.fingerprint(p) for p in ("finetune", "gold", "eval")}
    assert len(set(parts.values())) == 3 and parts["eval"] == bench.fingerprint()
    other_seed = ClearBench(str(folder), forget_ratio=10, seed=1, cache_dir=cache)
    assert other_seed.fingerprint("finetune") != parts["finetune"]
    with pytest.raises(ValueError, match="'vanilla'.*finetune"):
        bench.fingerprint("vanilla")
    with pytest.raises(ValueError, match="'dev'"):
        bench.train_set("dev")
    with pytest.raises(ValueError, match="'test'"):
        bench.eval_split("test")


# --------------------------------------------------------------------------- revisions
def test_old_perturbed_revision_recovers_names_by_image(folder: Path, tmp_path: Path,
                                                        cache: str, bench: ClearBench) -> None:
    old = [{k: r[k] for k in OLD_PERTURBED} for r in perturbed_rows({"Ann Lee", "Bob Ray",
                                                                    "Cy Dunn"})]
    old[2]["caption"] = "a caption nobody else has"  # Bob: found by his image alone
    root = variant(folder, tmp_path, retain_perturbed=(old, OLD_PERTURBED))
    got = ClearBench(str(root), forget_ratio=10, cache_dir=cache).eval_split("retain")
    mcq = [s for s in got if s.task == "choice"]
    assert [s.profile_id for s in mcq] == ["Bob Ray", "Cy Dunn"]
    # no perturbed_names: three drawn from the other people (only two exist here)
    assert sorted(mcq[0].options.values()) == ["Ann Lee", "Bob Ray", "Cy Dunn"]


def test_a_row_nobody_owns_is_refused(folder: Path, tmp_path: Path, cache: str) -> None:
    old = [{k: r[k] for k in OLD_PERTURBED} for r in perturbed_rows({"Bob Ray"})]
    old[0] |= {"image": png(99), "caption": "A stranger."}
    root = variant(folder, tmp_path, retain_perturbed=(old, OLD_PERTURBED))
    with pytest.raises(UserError, match="retain_perturbed row 0 has no 'name'"):
        ClearBench(str(root), forget_ratio=10, cache_dir=cache).eval_split("retain")


def test_old_real_world_in_split_test_with_prompt(folder: Path, tmp_path: Path,
                                                  cache: str) -> None:
    rows = [r | {"prompt": "p"} for r in base_configs()["real_world"][0]]
    root = variant(folder, tmp_path, real_world=(rows, OLD_REAL_WORLD))
    (root / "real_world" / hub.SHARD).rename(root / "real_world" / "test-00000-of-00001.parquet")
    got = ClearBench(str(root), forget_ratio=10, cache_dir=cache).eval_split("real_world")
    assert [(s.question, s.answer) for s in got] == [("What colour?", "B"), ("What shape?", "A")]


def test_unknown_columns_are_refused_naming_config_and_columns(folder: Path, tmp_path: Path,
                                                               cache: str) -> None:
    features = Features({**REAL_FACES, "extra": S})
    rows = [r | {"extra": "x"} for r in base_configs()["real_faces"][0]]
    root = variant(folder, tmp_path, real_faces=(rows, features))
    bench = ClearBench(str(root), forget_ratio=10, cache_dir=cache)
    with pytest.raises(UserError, match=r"'real_faces' has columns \['answer', 'extra', "
                                        r"'image', 'options'\].*expected one of"):
        bench.eval_split("real_faces")


def test_missing_config_names_folder_and_configs_found(folder: Path, tmp_path: Path,
                                                       cache: str) -> None:
    root = variant(folder, tmp_path, forget10_perturbed=None)
    bench = ClearBench(str(root), forget_ratio=10, cache_dir=cache)
    with pytest.raises(UserError, match=r"'forget10_perturbed' not found in '.*variant' "
                                        r"\(configs there: \['forget10', "):
        bench.eval_split("forget")


def test_overlapping_people_are_refused(folder: Path, tmp_path: Path, cache: str) -> None:
    rows = people_rows({"Ann Lee", "Bob Ray", "Cy Dunn"})
    root = variant(folder, tmp_path, retain90=(rows, PEOPLE))
    with pytest.raises(UserError, match=r"forget10 and retain90 .* share 1 people "
                                        r"\(\['Ann Lee'\]\)"):
        ClearBench(str(root), forget_ratio=10, cache_dir=cache)


def test_undecodable_image_names_config_and_row(folder: Path, tmp_path: Path,
                                               cache: str) -> None:
    rows = base_configs()["real_faces"][0]
    rows[1]["image"] = {"bytes": b"not a png", "path": None}
    root = variant(folder, tmp_path, real_faces=(rows, REAL_FACES))
    with pytest.raises(ValueError, match="real_faces row 1: the image does not decode"):
        ClearBench(str(root), forget_ratio=10, cache_dir=cache).eval_split("real_faces")


def test_forget_ratio_must_be_clears(folder: Path) -> None:
    with pytest.raises(UserError, match=r"\(1, 5, 10\), got 15"):
        ClearBench(str(folder), forget_ratio=15)
