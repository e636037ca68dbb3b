"""Labels cover exactly the answer tokens (plus EOS) for both chat formats."""

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from unlearn.data.collate import IGNORE, Collator, encode, pad_batch
from unlearn.data.schema import Sample
from unlearn.methods.gradient import GradientAscent
from unlearn.methods.losses import nll
from unlearn.models.tiny import build_tiny
from unlearn.train import fit

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


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def family_model(request):
    model, processor = build_tiny(request.param, size="tiny")
    return request.param, model, processor


def five_lengths():
    """Items of five different lengths, image+text and text-only mixed."""
    extra = [
        Sample("q", "Ben Cole was born in __.", "1971", "cloze", "text_only"),
        Sample("q", "In which year was Ben Cole, the pilot from Oslo who enjoys chess, born?",
               "Ben Cole was born in 1971.", "generation", "text_only"),
    ]
    return samples() + extra


def test_length_groups_pad_sorted_runs(family_model):
    family, _, processor = family_model
    items = five_lengths()
    lengths = sorted(len(encode(s, processor, family, with_answer=True)["input_ids"])
                     for s in items)
    assert len(set(lengths)) == 5
    groups = Collator(processor, family, length_groups=2)(items)
    # runs of 2 and 3 items, each padded only to its own longest item
    assert [g["input_ids"].shape for g in groups] == [(2, lengths[1]), (3, lengths[4])]
    assert [g["attention_mask"].sum(1).tolist() for g in groups] == [lengths[:2], lengths[2:]]
    key = "pixel_values" if family == "llava" else "image_grid_thw"
    assert sum(g[key].shape[0] for g in groups if key in g) == 2  # both images, once each
    assert len(Collator(processor, family, length_groups=9)(items)) == 5  # never an empty run
    with pytest.raises(ValueError, match="length_groups=0 must be >= 1"):
        Collator(processor, family, length_groups=0)


@pytest.mark.parametrize("reduction", ["token_mean", "sequence_mean"])
def test_length_groups_give_the_nll_and_gradient_of_the_whole_batch(family_model, reduction):
    family, model, processor = family_model
    items = five_lengths()
    whole = Collator(processor, family)(items)
    groups = Collator(processor, family, length_groups=2)(items)

    def value_and_grad(batch):
        model.zero_grad()
        loss = nll(model, batch, reduction)
        loss.mean().backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return loss.detach(), grad

    (loss_whole, grad_whole), (loss_groups, grad_groups) = map(value_and_grad, (whole, groups))
    if reduction == "sequence_mean":  # per sequence, in length order for the groups
        loss_whole, loss_groups = loss_whole.sort().values, loss_groups.sort().values
    assert loss_whole.shape == loss_groups.shape
    assert torch.allclose(loss_whole, loss_groups, atol=1e-5)
    assert grad_whole.abs().max() > 0
    assert torch.allclose(grad_whole, grad_groups, atol=1e-6, rtol=1e-4)


def test_length_groups_are_refused_for_objectives_other_than_fine_tuning():
    stage = OmegaConf.create({"length_groups": 2, "loss_scope": "answer", "batch_size": 4})
    with pytest.raises(ValueError, match="length_groups=2: GradientAscent takes whole batches"):
        fit(None, None, "llava", GradientAscent(), {"forget": []}, stage, OmegaConf.create({}),
            seed=0)
