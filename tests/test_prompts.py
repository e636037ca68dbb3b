"""Prompts are the official MLLMU-Bench strings (benchmarks.md §1.3), character for character."""

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


def test_instruction_and_suffix_wrap_the_question():
    p = build_prompt(sample("generation", "text_only", "Who?"), "llava", None,
                     instruction="Forget. ", suffix=" Really?")
    assert p.startswith("USER: Forget. Who? Really?\n")


def test_answer_follows_prompt_with_exactly_one_space():
    assert answer_text("ASSISTANT:", "B") == " B"
    assert answer_text("ASSISTANT: ", "This person.") == "This person."
    assert answer_text("<|im_start|>assistant\n", "B") == "B"
