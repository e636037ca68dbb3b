"""Labels cover exactly the answer tokens (plus EOS) for both chat formats."""

import pytest
import torch
from PIL import Image

from unlearn.data.collate import IGNORE, Collator, encode, pad_batch
from unlearn.data.schema import Sample
from unlearn.models.tiny import build_tiny

IMG = Image.new("RGB", (64, 64), (200, 30, 30))
OPTS = {"A": "baker", "B": "pilot", "C": "nurse", "D": "welder"}


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def family_processor(request):
    model, processor = build_tiny(request.param, size="tiny", image_size=56
                                  if request.param != "llava" else 64)
    return request.param, processor


def samples():
    return [
        Sample("p", "What is the profession of this person?", "B", "classification",
               "image_text", image=IMG, options=OPTS),
        Sample("p", "Ava Abbott works as a __.", "pilot", "cloze", "text_only"),
        Sample("p", "Who is this?", "This is Ava Abbott.", "generation", "image_text",
               image=IMG),
    ]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_labels_are_exactly_answer_and_eos(family_processor, index):
    family, processor = family_processor
    tok = processor.tokenizer
    s = samples()[index]
    train = encode(s, processor, family, with_answer=True)
    prompt = encode(s, processor, family, with_answer=False)
    n = len(prompt["input_ids"])
    # the evaluation prompt is token-for-token the start of the training sequence
    assert torch.equal(train["input_ids"][:n], prompt["input_ids"])
    labelled = train["labels"] != IGNORE
    assert not labelled[:n].any() and labelled[n:].all()
    text = tok.decode(train["labels"][labelled])
    sep = " " if family == "llava" and s.task != "generation" else ""
    assert text == sep + s.answer + tok.eos_token
    if family != "llava":
        assert train["mm_token_type_ids"].shape == train["input_ids"].shape


def test_full_scope_labels_prompt_but_never_image_tokens(family_processor):
    family, processor = family_processor
    s = samples()[0]
    train = encode(s, processor, family, with_answer=True, loss_scope="full")
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    is_image = train["input_ids"] == image_id
    assert is_image.sum() > 0
    assert (train["labels"][is_image] == IGNORE).all()
    assert (train["labels"][~is_image] == train["input_ids"][~is_image]).all()


def test_padding_sides_and_mixed_image_batches(family_processor):
    family, processor = family_processor
    pad = processor.tokenizer.pad_token_id
    batch = Collator(processor, family)(samples())
    lengths = batch["attention_mask"].sum(1)
    assert batch["input_ids"].shape[0] == 3
    short = int(lengths.argmin())
    assert batch["input_ids"][short, -1] == pad and batch["labels"][short, -1] == IGNORE
    # two of the three samples have an image
    key = "pixel_values" if family == "llava" else "image_grid_thw"
    assert batch[key].shape[0] == 2
    items = [encode(s, processor, family, with_answer=False) for s in samples()]
    left = pad_batch(items, pad, "left")
    assert (left["attention_mask"][:, -1] == 1).all()
    assert left["input_ids"][short, 0] == pad


def test_few_shot_images_come_before_the_question_image():
    _, processor = build_tiny("llava", size="tiny")
    shot_img = Image.new("RGB", (64, 64), (0, 0, 255))
    shot = Sample("p0", "Who?", "B", "classification", "image_text", image=shot_img,
                  options=OPTS)
    s = Sample("p1", "Who?", "A", "classification", "image_text", image=IMG, options=OPTS,
               meta={"shots": [shot, shot]})
    enc = encode(s, processor, "llava", with_answer=False)
    assert enc["pixel_values"].shape[0] == 3
    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    assert int((enc["input_ids"] == image_id).sum()) == 3 * 16
    # the question's own image is the last one (blue shots first, red question image last)
    assert enc["pixel_values"][0, 2].mean() > enc["pixel_values"][2, 2].mean()
