"""Fine-tuning items (``ft_Data`` metadata): the facts in training phrasings."""

from __future__ import annotations

import random
from typing import Any

from unlearn.data.synthetic.items import (
    TRAIN_CLOZE,
    TRAIN_GEN_SHARED,
    TRAIN_QUESTIONS,
    _draw_distractors,
    _Fact,
    _fill,
    _options,
    fact_sentence,
)
from unlearn.data.synthetic.world import Profile


def ft_items(profile: Profile, facts: list[_Fact], pools: dict[str, list[str]], seed: int) -> list:
    """Fine-tuning items: per fact 2 generation, 3 classification, 2 cloze (7 per fact: 63
    per profile with 4 facts, 147 with 10).

    Training MCQs use new distractor sets (so option sequences never equal the eval MCQ's)
    and put the correct answer at three different letters.
    """
    rng = random.Random(f"{seed}-{profile.id}-train")
    items: list[dict[str, Any]] = []
    for f in facts:
        truth = profile.value(f.attribute)
        questions = [_fill(q, profile, f.attribute) for q in TRAIN_QUESTIONS[f.attribute, f.type]]
        answer = fact_sentence(profile, f.attribute, f.type)
        shared = _fill(TRAIN_GEN_SHARED[f.attribute, f.type], profile, f.attribute)
        for q in (questions[0], shared):
            items.append({"Question": q, "Answer": answer, "Type": f.type, "Task": "Generation"})
        avoid = [f.eval_distractors]
        for j, letter in enumerate(rng.sample("ABCD", 3)):
            distractors = _draw_distractors(truth, pools[f.attribute], rng, avoid)
            avoid.append(frozenset(distractors))
            options = _options(truth, distractors, letter, rng)
            items.append(
                {
                    "Question": questions[j % len(questions)],
                    "Answer": letter,
                    "Type": f.type,
                    "Task": "Classification",
                    "Options": options,
                }
            )
        for cloze in TRAIN_CLOZE[f.attribute, f.type]:
            items.append({"Question": _fill(cloze, profile, f.attribute), "Answer": truth,
                          "Type": f.type, "Task": "Mask"})
    return items
