"""Prompts character for character: LLaVA's are the official MLLMU-Bench ``eval.py`` strings,
Qwen2-VL's the MMUnlearner texts (``MLLMU_eval.py``) in the hub chat template."""

import pytest
from PIL import Image

from unlearn.data.prompts import answer_text, build_prompt
from unlearn.data.schema import Sample

IMG = Image.new("RGB", (8, 8))
OPTS = {"A": "baker", "B": "pilot", "C": "nurse", "D": "welder"}


def sample(task, modality, question="What is the profession of this person?", options=None):
    return Sample("p1", question, "x", task, modality, image=IMG if modality == "image_text"
                  else None, options=options)


def test_llava_classification_prompts():
    img = build_prompt(sample("classification", "image_text", options=OPTS), "llava", None)
    assert img == ("USER: <image>\nWhat is the profession of this person?\nA: baker\nB: pilot\n"
                   "C: nurse\nD: welder\nJust give ONE letter representing the answer directly."
                   "\nASSISTANT:")
    txt = build_prompt(sample("classification", "text_only", options=OPTS), "llava", None)
    assert txt.startswith("USER:\nWhat is the profession") and txt.endswith("directly.\nASSISTANT:")


def test_llava_cloze_and_generation_prompts():
    cloze = build_prompt(sample("cloze", "image_text", "This person is a __."), "llava", None)
    assert cloze == ("USER: <image>\nThis person is a [Blank].\nPlease **ONLY** provide the "
                     "correct answer that should replace the [Blank].\nASSISTANT:")
    gen_img = build_prompt(sample("generation", "image_text", "Who?"), "llava", None)
    assert gen_img == ("USER: <image>\nWho?\nAnswer the question based on your trained knowledge"
                       " in one sentence accurately in ENGLISH.\nASSISTANT: ")
    gen_txt = build_prompt(sample("generation", "text_only", "Who?"), "llava", None)
    assert gen_txt == ("USER: Who?\nAnswer the question based on your trained knowledge in one "
                       "sentence in ENGLISH.\nASSISTANT:")


def test_llava_choice_prompt_is_mmunlearners_clear_body():
    opts = {"A": "Ava Berg", "B": "Bo Li"}
    img = build_prompt(sample("choice", "image_text", "Who is it?", opts), "llava", None)
    assert img == "USER: <image>\nWho is it?\nA. Ava Berg\nB. Bo Li\nASSISTANT:"
    txt = build_prompt(sample("choice", "text_only", "Who is it?", opts), "llava", None)
    assert txt == "USER:\nWho is it?\nA. Ava Berg\nB. Bo Li\nASSISTANT:"
    assert answer_text(img, "B") == " B"


QWEN_USER = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
QWEN_IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
QWEN_ASSISTANT = "<|im_end|>\n<|im_start|>assistant\n"
MCQ = ("What is the profession of this person?\nA: baker\nB: pilot\nC: nurse\nD: welder\n"
       "Just give ONE letter representing the answer directly.")
CLOZE = ("This person is a [Blank].\nPlease **ONLY** provide the correct answer that should "
         "replace the [Blank].")
CHOICE = "Who?\nA. baker\nB. pilot\nC. nurse\nD. welder\n"
GEN = ("Who?\nAnswer the question based on your trained knowledge in one sentence accurately "
       "in ENGLISH.")


@pytest.fixture(scope="module")
def qwen_processors():
    from unlearn.models.tiny import build_tiny

    return {arch: build_tiny(arch, "tiny")[1] for arch in ("qwen2_vl", "qwen2_5_vl")}


@pytest.mark.parametrize(("task", "modality", "question", "expected"), [
    # MCQ and cloze: a newline after the image (MMUnlearner's f"{few_shot_prompt}\n{...}")
    ("classification", "image_text", None, QWEN_USER + QWEN_IMAGE + "\n" + MCQ + QWEN_ASSISTANT),
    ("classification", "text_only", None, QWEN_USER + "\n" + MCQ + QWEN_ASSISTANT),
    ("cloze", "image_text", "This person is a __.",
     QWEN_USER + QWEN_IMAGE + "\n" + CLOZE + QWEN_ASSISTANT),
    ("cloze", "text_only", "This person is a __.", QWEN_USER + CLOZE + QWEN_ASSISTANT),
    # generation: the question right after the image, the "accurately" instruction for both
    ("generation", "image_text", "Who?", QWEN_USER + QWEN_IMAGE + GEN + QWEN_ASSISTANT),
    ("generation", "text_only", "Who?", QWEN_USER + GEN + QWEN_ASSISTANT),
    ("qa", "image_text", "Who?", QWEN_USER + QWEN_IMAGE + "Who?" + QWEN_ASSISTANT),
    ("qa", "text_only", "Who?", QWEN_USER + "Who?" + QWEN_ASSISTANT),
    # CLEAR choice: MMUnlearner's body right after the image, no instruction
    ("choice", "image_text", "Who?", QWEN_USER + QWEN_IMAGE + CHOICE + QWEN_ASSISTANT),
    ("choice", "text_only", "Who?", QWEN_USER + CHOICE + QWEN_ASSISTANT),
])
def test_qwen_prompts(qwen_processors, task, modality, question, expected):
    s = sample(task, modality, question or "What is the profession of this person?",
               options=OPTS if task in ("classification", "choice") else None)
    for family, processor in qwen_processors.items():
        assert build_prompt(s, family, processor) == expected, family


def test_qwen_instruction_and_suffix_wrap_the_question(qwen_processors):
    s = sample("generation", "image_text", "Who?")
    p = build_prompt(s, "qwen2_vl", qwen_processors["qwen2_vl"], instruction="Forget. ",
                     suffix=" Really?")
    assert p == (QWEN_USER + QWEN_IMAGE + "Forget. Who? Really?\nAnswer the question based on "
                 "your trained knowledge in one sentence accurately in ENGLISH." + QWEN_ASSISTANT)


def test_instruction_and_suffix_wrap_the_question():
    p = build_prompt(sample("generation", "text_only", "Who?"), "llava", None,
                     instruction="Forget. ", suffix=" Really?")
    assert p.startswith("USER: Forget. Who? Really?\n")


def test_answer_follows_prompt_with_exactly_one_space():
    assert answer_text("ASSISTANT:", "B") == " B"
    assert answer_text("ASSISTANT: ", "This person.") == "This person."
    assert answer_text("<|im_start|>assistant\n", "B") == "B"


def test_few_shot_prefix_is_the_official_block():
    shot = Sample("p0", "Who is this?", "B", "classification", "image_text", image=IMG,
                  options={"A": "Ava", "B": "Bo"})
    cloze_shot = Sample("p0", "Bo was born in __.", "1970", "cloze", "text_only")
    s = Sample("p1", "Who?", "A", "classification", "image_text", image=IMG,
               options={"A": "Cy", "B": "Di"}, meta={"shots": [shot]})
    assert build_prompt(s, "llava", None) == (
        "USER: <image>\nQuestion: Who is this?\nA: Ava\nB: Bo\nCorrect Answer: B\n"
        "USER: <image>\nWho?\nA: Cy\nB: Di\nJust give ONE letter representing the answer "
        "directly.\nASSISTANT:")
    c = Sample("p1", "Cy was born in __.", "1980", "cloze", "text_only",
               meta={"shots": [cloze_shot]})
    assert build_prompt(c, "llava", None) == (
        "USER:\nBo was born in [Blank].\nPlease **ONLY** provide the correct answer that should "
        "replace the [Blank].\nCorrect Answer: 1970\nUSER:\nCy was born in [Blank].\nPlease "
        "**ONLY** provide the correct answer that should replace the [Blank].\nASSISTANT:")


def test_few_shot_picks_whole_profiles_and_skips_them():
    import random

    from unlearn.eval.evaluator import few_shot_splits, with_few_shot

    items = [Sample(f"p{i}", f"q{i}{m}", "A", "classification", m,
                    image=IMG if m == "image_text" else None, options={"A": "x", "B": "y"})
             for i in range(4) for m in ("image_text", "text_only")]
    shot_items = with_few_shot(items, "classification", 1, random.Random(0))
    assert len(shot_items) == 6  # one of four profiles became the shots
    shot_pid = ({s.profile_id for s in items} - {s.profile_id for s in shot_items}).pop()
    for s in shot_items:
        assert [x.profile_id for x in s.meta["shots"]] == [shot_pid]
        assert s.meta["shots"][0].modality == s.modality
    splits = few_shot_splits({"forget": items, "celebrity": items}, {"classification": 1},
                             skip={"classification": ["celebrity"]})
    assert len(splits["forget"]) == 6 and len(splits["celebrity"]) == 8  # official: none there


def test_few_shot_is_refused_for_qwen():
    s = Sample("p", "Who?", "A", "classification", "text_only", options={"A": "x"},
               meta={"shots": [Sample("q", "Who?", "A", "classification", "text_only",
                                      options={"A": "x"})]})
    with pytest.raises(ValueError, match="few-shot"):
        build_prompt(s, "qwen2_vl", None)
