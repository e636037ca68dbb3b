"""Multiple-choice hint items: a warm-up that teaches a tiny model to bind option letters.

A randomly initialised model learns facts long before it learns to emit the *letter* of the
option that matches a fact. Items that state the answer (``Hint: 1955.``) before the
question isolate that second step; a short phase on them before the vanilla epochs lets the
skill carry over to questions without a hint (experiments/foundation.md).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from unlearn.data.schema import Sample

HINT = "Hint: {answer}.\n{question}"


def hint_items(samples: Sequence[Sample], n: int, seed: int) -> list[Sample]:
    """``n`` hint versions of the multiple-choice items among ``samples``, options reshuffled.

    Only items whose answer is one of their option letters qualify (refusal items of the ICU
    practice do not); the real ``ft_Data`` has none, which is an error here.
    """
    mcq = [s for s in samples if s.options and s.answer in s.options]
    if not mcq:
        raise ValueError("the multiple-choice warm-up needs fine-tuning items with options "
                         "(the synthetic twin has them, the real ft_Data does not); "
                         "set model.vanilla.mcq_warmup.steps=0")
    rng = random.Random(f"hints-{seed}")
    out = []
    for _ in range(n):
        s = rng.choice(mcq)
        truth = s.options[s.answer]
        values = list(s.options.values())
        rng.shuffle(values)
        options = dict(zip(s.options, values, strict=True))
        letter = next(k for k, v in options.items() if v == truth)
        out.append(dataclasses.replace(
            s, question=HINT.format(answer=truth, question=s.question), options=options,
            answer=letter))
    return out
