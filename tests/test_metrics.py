"""Each metric against values computed by hand."""

import math

import pytest

from unlearn.eval.metrics import aggregate, bleu, cloze_correct, parse_letter, rouge, score

ABCD = ("A", "B", "C", "D")


def test_rouge_f_measures_by_hand():
    # LCS "the cat on the mat" = 5 of 6 tokens each way -> P = R = F = 5/6;
    # shared bigrams: the-cat, on-the, the-mat = 3 of 5.
    r = rouge("the cat sat on the mat", "the cat lay on the mat")
    assert r["rougeL"] == pytest.approx(5 / 6)
    assert r["rouge1"] == pytest.approx(5 / 6)
    assert r["rouge2"] == pytest.approx(3 / 5)
    # LCS 2, precision 1, recall 1/2 -> F = 2/3
    assert rouge("alpha beta gamma delta", "beta delta")["rougeL"] == pytest.approx(2 / 3)


def test_rouge_uses_stemmer_and_case_folding():
    assert rouge("She teaches painting", "she teach paint")["rouge1"] == pytest.approx(1.0)


def test_bleu_by_hand():
    # p1..p4 = 5/6, 3/5, 2/4, 1/3; equal lengths -> no brevity penalty
    expected = (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert bleu("the cat sat on the mat", "the cat sat on a mat") == pytest.approx(expected)
    # method1 smoothing: zero counts become 0.1 / n-gram count
    expected = (2 / 4 * 1 / 3 * 0.1 / 2 * 0.1 / 1) ** 0.25
    assert bleu("a b c d", "a b x y") == pytest.approx(expected)
    assert bleu("a b c d", "a b c d") == pytest.approx(1.0)
    assert bleu("a b c d", "") == 0.0


def test_bleu_takes_the_truth_as_reference_and_the_prediction_as_hypothesis():
    truth, prediction = "Mei lives in Oslo with her dog", "Mei lives in Oslo"
    # hypothesis 4 tokens, all its n-grams in the 7-token reference: the brevity penalty only
    right = math.exp(1 - 7 / 4)
    # swapped: p1..p4 = 4/7, 3/6, 2/5, 1/4 and no brevity penalty
    swapped = (4 / 7 * 3 / 6 * 2 / 5 * 1 / 4) ** 0.25
    assert abs(right - swapped) > 0.05
    assert bleu(truth, prediction) == pytest.approx(right)
    assert bleu(prediction, truth) == pytest.approx(swapped)
    assert score("generation", prediction, truth)["gen_bleu"] == pytest.approx(right)
    assert score("generation", "ASSISTANT: " + prediction, truth)["gen_bleu"] == pytest.approx(
        right)


@pytest.mark.parametrize(
    ("text", "official", "mmu"),
    [
        (" B", "B", "B"),
        ("b) the second one", "B", "B"),
        ("E", None, None),
        ("", None, None),
        ("   ", None, None),
        ("ASSISTANT: C", "C", "C"),
        ("(A)", None, "A"),
        ("\nD.", "D", "D"),
        ("Answer: a", "A", "A"),
        ("1", None, None),
    ],
)
def test_letter_parsing_edge_cases(text, official, mmu):
    assert parse_letter(text, ABCD, "official") == official
    assert parse_letter(text, ABCD, "mmu") == mmu


def test_unknown_letter_parser_names_the_options():
    with pytest.raises(ValueError, match=r"eval.letter_parser='x'.*official.*mmu"):
        parse_letter("A", ABCD, "x")


def test_cloze_is_case_insensitive_substring():
    assert cloze_correct("He was born in PARIS.", "Paris")
    assert not cloze_correct("Par", "Paris")
    assert cloze_correct("ASSISTANT: 1975", "1975")


def test_score_and_aggregate():
    rows = [score("classification", " A", "A", ABCD), score("classification", "B", "A", ABCD),
            score("cloze", "x 1975", "1975"), score("generation", "a b c d", "a b c d")]
    agg = aggregate(rows)
    assert agg["class_acc"] == 0.5
    assert agg["cloze_acc"] == 1.0
    assert agg["gen_rougeL"] == 1.0 and agg["gen_bleu"] == pytest.approx(1.0)
    assert list(agg) == ["class_acc", "cloze_acc", "gen_rouge1", "gen_rouge2", "gen_rougeL",
                         "gen_bleu"]
    assert not math.isnan(agg["gen_rouge2"])


def test_rouge_recall_is_clears_and_differs_from_f_by_hand():
    # truth 6 tokens, prediction 3, LCS 3: recall 3/6, precision 3/3, F = 2*0.5*1/1.5
    truth, short = "the cat sat on the mat", "the cat sat"
    values = score("qa", short, truth, metrics=["gen_rougeL", "gen_rougeL_recall"])
    assert values == pytest.approx({"gen_rougeL": 2 / 3, "gen_rougeL_recall": 0.5})
    # a prediction that repeats the whole truth and more: recall 1, F below 1
    long = score("qa", truth + " and then slept all day", truth,
                 metrics=["gen_rougeL_recall", "gen_rougeL"])
    assert long["gen_rougeL_recall"] == 1.0 and long["gen_rougeL"] == pytest.approx(12 / 17)


def test_choice_accuracy_parses_the_first_alphanumeric_character():
    options = {"A": "Anna Berg", "B": "Ole Lund", "C": "Mei Tan", "D": "Ravi Sen"}
    assert score("choice", "(B) Ole Lund", "B", options, metrics=["choice_acc"]) == {
        "choice_acc": 1.0}
    assert score("choice", " b.", "B", options, metrics=["choice_acc"])["choice_acc"] == 1.0
    assert score("choice", "Ole Lund", "B", options, metrics=["choice_acc"])["choice_acc"] == 0.0
    # the letter parser setting does not change it (classification's "official" would fail)
    assert score("choice", "(B)", "B", options, "official", ["choice_acc"])["choice_acc"] == 1.0


def test_scoring_an_unknown_metric_or_task_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown metric.*gen_rougeL_recall"):
        score("qa", "x", "x", metrics=["gen_meteor"])
    with pytest.raises(ValueError, match="cannot score task 'qa' without metric names"):
        score("qa", "x", "x")


def test_aggregate_keeps_registry_order_then_likelihood_metrics():
    rows = [{"qa_prob": 0.2, "gen_rougeL": 1.0, "choice_acc": 0.0},
            {"qa_prob": 0.4, "choice_acc": 1.0}]
    means = aggregate(rows)
    assert list(means) == ["gen_rougeL", "choice_acc", "qa_prob"]
    assert means == pytest.approx({"gen_rougeL": 1.0, "choice_acc": 0.5, "qa_prob": 0.3})
