"""The MLLMU-Bench metrics, as the official ``eval.py`` computes them (docs/fidelity.md §12)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rouge_score import rouge_scorer

LETTER_PARSERS: tuple[str, ...] = ("official", "mmu")
METRICS: tuple[str, ...] = (
    "class_acc", "cloze_acc", "gen_rouge1", "gen_rouge2", "gen_rougeL", "gen_bleu"
)


def extract_answer(text: str) -> str:
    """Text after ``ASSISTANT:`` (else after ``Answer:``), as the official parser does."""
    for marker in ("ASSISTANT:", "Answer:"):
        if marker in text:
            return text.split(marker, 1)[1]
    return text


def parse_letter(text: str, options: Iterable[str], style: str = "official") -> str | None:
    """The option letter a generation names, or None when it names none.

    ``official``: first character of the stripped answer, upper-cased (MLLMU ``eval.py``);
    ``mmu``: first alphanumeric character (MMUnlearner ``MLLMU_eval.py``).
    """
    answer = extract_answer(text)
    if style == "official":
        answer = answer.strip()
    elif style == "mmu":
        answer = re.sub(r"[^a-zA-Z0-9]", "", answer)
    else:
        raise ValueError(f"eval.letter_parser={style!r} is not one of {list(LETTER_PARSERS)}")
    if not answer:
        return None
    letter = answer[0].upper()
    return letter if letter in set(options) else None


def cloze_correct(prediction: str, truth: str) -> bool:
    """Case-insensitive substring match of the ground truth in the answer."""
    return truth.lower() in extract_answer(prediction).lower()


@lru_cache(maxsize=1)
def _scorer() -> rouge_scorer.RougeScorer:
    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)


def rouge(truth: str, prediction: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measure with the Porter stemmer (rouge-score)."""
    scores = _scorer().score(truth, extract_answer(prediction).strip())
    return {k: scores[k].fmeasure for k in ("rouge1", "rouge2", "rougeL")}


def bleu(truth: str, prediction: str) -> float:
    """nltk sentence BLEU, whitespace tokens, uniform 4-gram weights, smoothing method1."""
    hyp = extract_answer(prediction).split()
    if not hyp:
        return 0.0
    return float(
        sentence_bleu([truth.split()], hyp, smoothing_function=SmoothingFunction().method1)
    )


def score(task: str, prediction: str, truth: str, options: Iterable[str] | None = None,
          letter_parser: str = "official") -> dict[str, float]:
    """Per-item scores, keyed by the metric names of ``metrics.json``."""
    if task == "classification":
        return {"class_acc": float(parse_letter(prediction, options or (), letter_parser) == truth)}
    if task == "cloze":
        return {"cloze_acc": float(cloze_correct(prediction, truth))}
    if task == "generation":
        r = rouge(truth, prediction)
        return {"gen_rouge1": r["rouge1"], "gen_rouge2": r["rouge2"], "gen_rougeL": r["rougeL"],
                "gen_bleu": bleu(truth, prediction)}
    raise ValueError(f"cannot score task {task!r}")


def aggregate(rows: Iterable[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the items that carry it, in ``METRICS`` order."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for row in rows:
        for k, v in row.items():
            sums[k] = sums.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + 1
    return {k: sums[k] / counts[k] for k in METRICS if k in counts}
