"""Per-item metrics by name: MLLMU-Bench's, as its official ``eval.py`` computes them
(docs/fidelity.md §12), and CLEAR's (name multiple choice, ROUGE recall).

A benchmark's ``eval`` config maps each task to metric names of :data:`REGISTRY`; the
evaluator scores every item of a task with those metrics.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache

from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rouge_score import rouge_scorer

LETTER_PARSERS: tuple[str, ...] = ("official", "mmu")


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


@lru_cache(maxsize=4096)
def _rouge(truth: str, prediction: str) -> dict:
    """rouge-score's scores of one answer, cached: several metrics read the same scores."""
    return _scorer().score(truth, extract_answer(prediction).strip())


def rouge(truth: str, prediction: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measure with the Porter stemmer (rouge-score)."""
    scores = _rouge(truth, prediction)
    return {k: scores[k].fmeasure for k in ("rouge1", "rouge2", "rougeL")}


def rouge_recall(truth: str, prediction: str) -> float:
    """ROUGE-L recall with the Porter stemmer: CLEAR's official ROUGE (its ``eval.py``)."""
    return _rouge(truth, prediction)["rougeL"].recall


def bleu(truth: str, prediction: str) -> float:
    """nltk sentence BLEU, whitespace tokens, uniform 4-gram weights, smoothing method1."""
    hyp = extract_answer(prediction).split()
    if not hyp:
        return 0.0
    return float(
        sentence_bleu([truth.split()], hyp, smoothing_function=SmoothingFunction().method1)
    )


# (prediction, truth, options, letter_parser) -> the item's value
MetricFn = Callable[[str, str, Mapping[str, str] | None, str], float]

REGISTRY: dict[str, MetricFn] = {
    # MLLMU-Bench (eval.letter_parser picks the letter parser)
    "class_acc": lambda p, t, o, parser: float(parse_letter(p, o or (), parser) == t),
    "cloze_acc": lambda p, t, o, parser: float(cloze_correct(p, t)),
    "gen_rouge1": lambda p, t, o, parser: rouge(t, p)["rouge1"],
    "gen_rouge2": lambda p, t, o, parser: rouge(t, p)["rouge2"],
    "gen_rougeL": lambda p, t, o, parser: rouge(t, p)["rougeL"],
    "gen_bleu": lambda p, t, o, parser: bleu(t, p),
    # CLEAR: the name/VQA multiple choice as MMUnlearner's CLEAR_eval.py parses it (first
    # alphanumeric character), and the official ROUGE-L recall
    "choice_acc": lambda p, t, o, parser: float(parse_letter(p, o or (), "mmu") == t),
    "gen_rougeL_recall": lambda p, t, o, parser: rouge_recall(t, p),
}
METRICS: tuple[str, ...] = tuple(REGISTRY)
# MLLMU-Bench's tasks and their metrics (conf/eval/mllmu.yaml says the same)
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("class_acc",),
    "cloze": ("cloze_acc",),
    "generation": ("gen_rouge1", "gen_rouge2", "gen_rougeL", "gen_bleu"),
}


def score(task: str, prediction: str, truth: str, options: Mapping[str, str] | None = None,
          letter_parser: str = "official", metrics: Sequence[str] | None = None
          ) -> dict[str, float]:
    """Per-item scores, keyed by the metric names of ``metrics.json``: ``metrics`` (default:
    MLLMU-Bench's for ``task``)."""
    if metrics is None:
        if task not in TASK_METRICS:
            raise ValueError(f"cannot score task {task!r} without metric names")
        metrics = TASK_METRICS[task]
    unknown = [m for m in metrics if m not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {list(REGISTRY)}")
    return {m: REGISTRY[m](prediction, truth, options, letter_parser) for m in metrics}


def aggregate(rows: Iterable[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over the items that carry it: ``METRICS`` in their order, then
    the others (likelihood metrics) in the order first seen."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for row in rows:
        for k, v in row.items():
            sums[k] = sums.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + 1
    order = [k for k in METRICS if k in counts] + [k for k in counts if k not in REGISTRY]
    return {k: sums[k] / counts[k] for k in order}
