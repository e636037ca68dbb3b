"""Evaluation against known answers: a real tiny model whose generations are forced.

The model runs its real forward and ``generate`` (left padding, length-sorted batches, new
tokens decoded); only the next-token scores are overridden, so each prompt's answer is a known
string keyed by a name in its question. Records, order and metrics are then checked exactly.
"""

from __future__ import annotations

import math

import pytest
import torch
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from PIL import Image
from rouge_score import rouge_scorer
from transformers import LogitsProcessor, LogitsProcessorList

from unlearn.data.schema import Sample
from unlearn.eval.evaluator import evaluate
from unlearn.eval.generate import generate
from unlearn.models.tiny import build_tiny

IMG = Image.new("RGB", (64, 64), (40, 120, 200))
OPTS = {"A": "baker", "B": "pilot", "C": "nurse", "D": "welder"}
LONG = " ".join(["and before that, where exactly did this person work for many years"] * 6)


def item(split: str, task: str, modality: str, question: str, truth: str) -> Sample:
    return Sample("p", question, truth, task, modality, split=split,
                  image=IMG if modality == "image_text" else None,
                  options=OPTS if task == "classification" else None)


# question key (a name in the question) -> the exact text the model is made to answer
FORCED = {
    "Kira": "B",                         # right
    "Hiro": "A",                         # wrong (truth C)
    "Lina": "d) welder",                 # right: the official parser upper-cases "d"
    "Omar": "A",                         # right
    "Nico": "The answer is A",           # wrong: "T" is no option
    "Wren": "oslo, Norway",              # cloze hit (case-insensitive substring)
    "Yara": "baker",                     # cloze miss (truth pilot)
    "Zane": "Zane Abbott is a baker",
    "Mei": "Mei lives in Oslo",
}

# given order: per split, tasks interleaved; the long question first so sorting moves it
SPLITS = {
    "forget": [
        item("forget", "classification", "image_text", f"Kira: {LONG}?", "B"),
        item("forget", "cloze", "text_only", "Wren was born in __.", "Oslo"),
        item("forget", "classification", "image_text", "Hiro's job?", "C"),
        item("forget", "generation", "image_text", "Who is Zane?", "Zane Abbott is a pilot"),
        item("forget", "classification", "image_text", "What does Lina do?", "D"),
        item("forget", "cloze", "image_text", "Yara works as a __.", "pilot"),
    ],
    "test": [
        item("test", "classification", "text_only", "What does Omar do for a living?", "A"),
        item("test", "generation", "text_only", f"Where does Mei live, {LONG}?",
             "Mei lives in Oslo with her dog"),
        item("test", "classification", "text_only", "Nico?", "A"),
    ],
}

# evaluate(): task by task (classification, cloze, generation), each in split/given order
EXPECTED_RECORDS = [
    ("forget", "classification", "image_text", f"Kira: {LONG}?", "B", "B"),
    ("forget", "classification", "image_text", "Hiro's job?", "A", "C"),
    ("forget", "classification", "image_text", "What does Lina do?", "d) welder", "D"),
    ("test", "classification", "text_only", "What does Omar do for a living?", "A", "A"),
    ("test", "classification", "text_only", "Nico?", "The answer is A", "A"),
    ("forget", "cloze", "text_only", "Wren was born in __.", "oslo, Norway", "Oslo"),
    ("forget", "cloze", "image_text", "Yara works as a __.", "baker", "pilot"),
    ("forget", "generation", "image_text", "Who is Zane?", "Zane Abbott is a baker",
     "Zane Abbott is a pilot"),
    ("test", "generation", "text_only", f"Where does Mei live, {LONG}?", "Mei lives in Oslo",
     "Mei lives in Oslo with her dog"),
]

# By hand. Zane: 4 of 5 unigrams, 3 of 4 bigrams, LCS 4 (P = R); BLEU p1..p4 = 4/5, 3/4,
# 2/3, 1/2, no brevity penalty. Mei: hypothesis 4 tokens, reference 7, every hypothesis
# n-gram matches: P = 1, R = 4/7 -> F = 8/11; bigrams R = 3/6 -> F = 2/3; BLEU = the brevity
# penalty exp(1 - 7/4).
ZANE = {"gen_rouge1": 0.8, "gen_rouge2": 0.75, "gen_rougeL": 0.8,
        "gen_bleu": (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25}
MEI = {"gen_rouge1": 8 / 11, "gen_rouge2": 2 / 3, "gen_rougeL": 8 / 11,
       "gen_bleu": math.exp(1 - 7 / 4)}
EXPECTED_METRICS = {
    "forget": {
        "image_text": {"class_acc": 2 / 3, "cloze_acc": 0.0, **ZANE},
        "text_only": {"cloze_acc": 1.0},
    },
    "test": {
        "image_text": {},
        "text_only": {"class_acc": 0.5, **MEI},
    },
}


class Forced(LogitsProcessor):
    """Scores that leave one choice per row: the next token of the row's forced answer, then
    end of sequence. The row is recognised by the one ``FORCED`` key its prompt contains."""

    def __init__(self, tokenizer, prompt_len: int, seen: list[str]):
        self.tok, self.prompt_len, self.seen = tokenizer, prompt_len, seen

    def key(self, row: torch.Tensor) -> str:
        text = self.tok.decode(row[:self.prompt_len], skip_special_tokens=True)
        keys = [k for k in FORCED if k in text]
        assert len(keys) == 1, text
        return keys[0]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.prompt_len
        out = torch.full_like(scores, float("-inf"))
        for r, row in enumerate(input_ids):
            key = self.key(row)
            if step == 0:
                self.seen.append(key)
            target = self.tok(FORCED[key], add_special_tokens=False)["input_ids"]
            target = [*target, self.tok.eos_token_id]
            out[r, target[min(step, len(target) - 1)]] = 0.0
        return out


def forced_model(family: str) -> tuple[torch.nn.Module, object, list[str]]:
    """A tiny model of ``family`` whose ``generate`` answers every prompt with ``FORCED``;
    ``seen`` collects the keys in the order the prompts reached the model."""
    model, processor = build_tiny(family, "tiny")
    seen: list[str] = []
    real = model.generate

    def generate_forced(**kwargs):
        forced = Forced(processor.tokenizer, kwargs["input_ids"].shape[1], seen)
        return real(**kwargs, logits_processor=LogitsProcessorList([forced]))

    model.generate = generate_forced
    return model, processor, seen


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def forced(request):
    return request.param, *forced_model(request.param)


def test_generate_returns_answers_in_the_given_order(forced):
    family, model, processor, seen = forced
    samples = SPLITS["forget"] + SPLITS["test"]
    keys = [next(k for k in FORCED if k in s.question) for s in samples]
    expected = [FORCED[k] for k in keys]
    for batch_size in (1, 2, 4):
        seen.clear()
        out = generate(model, processor, family, samples, max_new_tokens=16,
                       batch_size=batch_size)
        assert out == expected
        # the model saw them sorted by prompt length (long questions last), not as given
        assert sorted(seen[-2:]) == ["Kira", "Mei"] and seen != keys


def test_evaluate_records_and_metrics_against_known_answers(forced):
    family, model, processor, seen = forced
    seen.clear()
    metrics, records = evaluate(model, processor, family, SPLITS, batch_size=2,
                                max_new_tokens={"classification": 16, "cloze": 16,
                                                "generation": 16})
    got = [(r["split"], r["task"], r["modality"], r["question"], r["prediction"], r["truth"])
           for r in records]
    assert got == EXPECTED_RECORDS
    # the classification batch reached the model length-sorted: the long question last
    assert seen[:5][-1] == "Kira" and seen[:5] != ["Kira", "Hiro", "Lina", "Omar", "Nico"]
    assert [r["score"] for r in records[:7]] == [
        {"class_acc": 1.0}, {"class_acc": 0.0}, {"class_acc": 1.0}, {"class_acc": 1.0},
        {"class_acc": 0.0}, {"cloze_acc": 1.0}, {"cloze_acc": 0.0}]
    assert records[7]["score"] == pytest.approx(ZANE)
    assert records[8]["score"] == pytest.approx(MEI)
    assert {split: set(mods) for split, mods in metrics.items()} == {
        split: set(mods) for split, mods in EXPECTED_METRICS.items()}
    for split, mods in EXPECTED_METRICS.items():
        for mod, expected in mods.items():
            assert list(metrics[split][mod]) == list(expected)  # METRICS order
            assert metrics[split][mod] == pytest.approx(expected, abs=1e-12), (split, mod)
    assert metrics["forget"]["image_text"]["class_acc"] == pytest.approx(0.6667, abs=5e-5)
    if family == "llava":
        assert records[1]["prompt"] == (
            "USER: <image>\nHiro's job?\nA: baker\nB: pilot\nC: nurse\nD: welder\n"
            "Just give ONE letter representing the answer directly.\nASSISTANT:")


def test_generation_metrics_agree_with_rouge_score_and_nltk():
    """The hand values above, recomputed by the libraries the official eval.py uses."""
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    smooth = SmoothingFunction().method1
    for truth, pred, expected in (("Zane Abbott is a pilot", "Zane Abbott is a baker", ZANE),
                                  ("Mei lives in Oslo with her dog", "Mei lives in Oslo", MEI)):
        r = scorer.score(truth, pred)
        assert {"gen_rouge1": r["rouge1"].fmeasure, "gen_rouge2": r["rouge2"].fmeasure,
                "gen_rougeL": r["rougeL"].fmeasure,
                "gen_bleu": sentence_bleu([truth.split()], pred.split(),
                                          smoothing_function=smooth)} == pytest.approx(expected)
