"""Answer log-likelihoods on tiny models and CLEAR's likelihood metrics by hand."""

import math

import pytest
import torch
from PIL import Image

from unlearn.data.prompts import answer_text, build_prompt
from unlearn.data.schema import Sample
from unlearn.errors import UserError
from unlearn.eval.likelihood import answer_scores, likelihood_rows
from unlearn.eval.likelihood_metrics import (
    forget_quality,
    likelihood_metrics,
    model_utility,
    probability,
    truth_ratio,
    truth_ratios,
)
from unlearn.models.tiny import build_tiny

IMG = Image.new("RGB", (64, 64), (200, 30, 30))


def row(gt, para, perturbed):
    return {"gt_loss": gt, "paraphrase_loss": para, "perturbed_loss": perturbed}


def flat(r):
    return [r["gt_loss"], r["paraphrase_loss"], *r["perturbed_loss"]]


# --- formulas -----------------------------------------------------------------------------

def test_truth_ratio_per_item_and_aggregated():
    rows = [row(0.1, 0.5, [1.0, 2.0]), row(0.1, 2.0, [1.0])]
    # exp(1.5 - 0.5) = e, exp(1.0 - 2.0) = 1/e
    assert truth_ratios(rows) == pytest.approx([math.e, 1 / math.e])
    assert truth_ratio(rows, forget=True) == pytest.approx(1 / math.e)
    # max(0, 1 - 1/e) and max(0, 1 - e) = 0
    assert truth_ratio(rows, forget=False) == pytest.approx((1 - 1 / math.e) / 2)


def test_truth_ratio_of_a_collapsed_model_takes_its_limits():
    rows = [row(0.0, 0.0, [1e4])]  # exp(1e4) overflows to inf
    assert truth_ratio(rows, forget=True) == 0.0
    assert truth_ratio(rows, forget=False) == 1.0


def test_probability_plain_and_over_options():
    rows = [row(math.log(2), 0.0, [math.log(4), math.log(4)]), row(math.log(5), 0.0, [0.0])]
    # p_true 1/2 and 1/5
    assert probability(rows, normalized=False) == pytest.approx((0.5 + 0.2) / 2)
    # 0.5 / (0.5 + 0.25 + 0.25) = 0.5; 0.2 / (0.2 + 1) = 1/6
    assert probability(rows, normalized=True) == pytest.approx((0.5 + 1 / 6) / 2)


def test_likelihood_metrics_per_split():
    rows = [row(math.log(2), 0.5, [1.0, 2.0])]
    assert likelihood_metrics(rows, forget=True, normalized=False) == pytest.approx(
        {"prob": 0.5, "truth_ratio": 1 / math.e})
    assert likelihood_metrics(rows, forget=False, normalized=True) == pytest.approx(
        {"prob": 0.5 / (0.5 + math.exp(-1) + math.exp(-2)), "truth_ratio": 1 - 1 / math.e})
    # no wrong answers: a probability, but no truth ratio
    assert likelihood_metrics([row(math.log(2), 0.5, [])], forget=True,
                              normalized=False) == pytest.approx({"prob": 0.5})
    with pytest.raises(UserError, match="1 of 2 items have no meta"):
        likelihood_metrics([*rows, row(1.0, 1.0, [])], forget=True, normalized=False)
    with pytest.raises(UserError, match="split is empty"):
        likelihood_metrics([], forget=True, normalized=False)


def test_forget_quality_is_the_ks_p_value():
    # disjoint samples of 3: D = 1, exact two-sided p = 2 / C(6, 3) = 0.1
    assert forget_quality([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1)
    assert forget_quality([1.0, 2.0, 3.0], [3.0, 1.0, 2.0]) == pytest.approx(1.0)
    with pytest.raises(UserError, match="0 gold"):
        forget_quality([1.0], [])


def test_model_utility_harmonic_mean():
    assert model_utility([0.5, 0.25]) == pytest.approx(1 / 3)  # 2 / (2 + 4)
    assert model_utility([0.5, 0.0, 0.9]) == 0.0
    with pytest.raises(UserError, match="non-negative"):
        model_utility([0.5, -0.1])


# --- likelihoods on tiny models -----------------------------------------------------------

@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def tiny(request):
    model, processor = build_tiny(request.param, "tiny")
    return request.param, model, processor


def samples():
    return [
        Sample("p1", "Who is this?", "This is Ava Abbott.", "generation", "image_text",
               image=IMG),
        Sample("p2", "Ava Abbott works as a __.", "pilot", "cloze", "text_only"),
        Sample("p3", "Where was this person born? Answer with the city only.", "Paris",
               "generation", "image_text", image=IMG),
    ]


CANDIDATES = [["This is Ava Abbott.", "Ava Abbott.", "This is Boris Brandt, a baker."],
              ["pilot", "chef who cooks in Lisbon", "nurse"],
              ["Paris", "Oslo", "San Francisco in the United States"]]


def by_hand(model, processor, family, sample):
    """Sum of log p of the answer tokens (+ EOS) from the full logits of one sequence."""
    tok = processor.tokenizer
    prompt = build_prompt(sample, family, processor)
    enc = processor(text=[prompt], images=[sample.image] if sample.has_image else None,
                    return_tensors="pt")
    answer = tok(answer_text(prompt, sample.answer), add_special_tokens=False)["input_ids"]
    answer = torch.tensor([[*answer, tok.eos_token_id]])
    n = enc["input_ids"].shape[1]
    inputs = {k: v for k, v in enc.items() if k in ("pixel_values", "image_grid_thw")}
    inputs["input_ids"] = torch.cat([enc["input_ids"], answer], 1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    if "mm_token_type_ids" in enc:
        inputs["mm_token_type_ids"] = torch.cat(
            [enc["mm_token_type_ids"], torch.zeros_like(answer)], 1)
    model.eval()
    with torch.no_grad():
        logits = model(**inputs).logits[0].double()
    logp = logits[n - 1:-1].log_softmax(-1).gather(-1, answer[0].unsqueeze(-1)).sum()
    return float(logp), answer.shape[1]


def test_batched_scores_equal_one_by_one(tiny):
    family, model, processor = tiny
    model.train()
    batched = answer_scores(model, processor, family, samples(), CANDIDATES, batch_size=4)
    assert model.training  # restored
    assert [len(s) for s in batched] == [3, 3, 3]
    for i, sample in enumerate(samples()):
        for j, cand in enumerate(CANDIDATES[i]):
            single = answer_scores(model, processor, family, [sample], [[cand]],
                                   batch_size=1)[0][0]
            assert batched[i][j].tokens == single.tokens
            # padding changes the fp32 summation order only
            assert batched[i][j].logprob == pytest.approx(single.logprob, rel=1e-6)
            assert batched[i][j].loss == pytest.approx(-single.logprob / single.tokens,
                                                       abs=1e-5)


def test_scores_equal_a_hand_computation_on_answer_tokens_only(tiny):
    family, model, processor = tiny
    tok = processor.tokenizer
    for sample in (samples()[0], samples()[1]):  # with an image and text only
        logprob, tokens = by_hand(model, processor, family, sample)
        score = answer_scores(model, processor, family, [sample], [[sample.answer]])[0][0]
        assert score.logprob == pytest.approx(logprob, rel=1e-6)
        # the answer's tokens and EOS: no prompt or image token counts
        prompt = build_prompt(sample, family, processor)
        expected = len(tok(answer_text(prompt, sample.answer),
                           add_special_tokens=False)["input_ids"]) + 1
        assert score.tokens == tokens == expected


def test_likelihood_rows_read_paraphrase_and_perturbed_from_meta(tiny):
    family, model, processor = tiny
    items = samples()[:2]
    items[0].meta = {"paraphrase": "Ava Abbott.", "perturbed": ["This is Boris Brandt, a baker."]}
    items[1].meta = {"perturbed": ("chef who cooks in Lisbon", "nurse")}
    rows = likelihood_rows(model, processor, family, items, batch_size=2)
    scores = answer_scores(model, processor, family, samples()[:2], CANDIDATES[:2],
                           batch_size=2)
    loss = [[s.loss for s in per_sample] for per_sample in scores]
    assert [list(r) for r in rows] == [["gt_loss", "paraphrase_loss", "perturbed_loss"]] * 2
    assert flat(rows[0]) == pytest.approx(loss[0], abs=1e-5)
    # no paraphrase: the truth stands in for it
    assert flat(rows[1]) == pytest.approx([loss[1][0], *loss[1]], abs=1e-5)
    items[1].meta = {}
    assert likelihood_rows(model, processor, family, items[1:], batch_size=2)[0][
        "perturbed_loss"] == []
    items[1].meta = {"perturbed": "nurse"}
    with pytest.raises(UserError, match=r"meta\['perturbed'\] is 'nurse'"):
        likelihood_rows(model, processor, family, items, batch_size=2)
