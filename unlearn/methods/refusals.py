"""Refusal answers y⁺ for PO (IdkDPO): a built-in varied list, or one refusal a line from a file.

Written for this project (not copied from TOFU's ``idontknow.jsonl``); like it, the refusals are
short, varied, first-person and name no fact, so PO learns to refuse rather than one string.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

REFUSALS: tuple[str, ...] = (
    "I don't know.",
    "I'm not sure about that.",
    "I have no information about this person.",
    "I can't answer that.",
    "That is something I don't know.",
    "I'm afraid I don't have that information.",
    "I cannot say.",
    "I have no idea.",
    "Sorry, I can't help with that question.",
    "I don't have any details on that.",
    "I'm unable to answer this.",
    "I'm not aware of that.",
    "That's beyond what I know.",
    "I can't recall anything about that.",
    "I don't have an answer to that.",
    "I'm not able to provide that information.",
    "Unfortunately, I don't know.",
    "I have nothing to say about this.",
    "I'm uncertain, so I won't guess.",
    "No idea, I'm afraid.",
)


def load_refusals(path: str | Path | None) -> tuple[str, ...]:
    """The built-in list, or the non-empty lines of ``path`` (``.jsonl``: a ``text`` field or
    a JSON string per line)."""
    if path is None:
        return REFUSALS
    path = Path(path)
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in lines]
        lines = [row["text"] if isinstance(row, dict) else str(row) for row in rows]
    if not lines:
        raise ValueError(f"method.objective.refusals={str(path)!r} holds no refusal")
    return tuple(lines)


def draw_refusals(n: int, refusals: Sequence[str], seed: int) -> list[str]:
    """One refusal per item, uniformly at random, reproducible from the run seed."""
    rng = random.Random(seed)
    return [rng.choice(refusals) for _ in range(n)]
