"""One sample type for every benchmark, so loaders, collators and evaluators share one shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from PIL import Image

Task = Literal["generation", "classification", "cloze", "qa", "choice"]
Modality = Literal["image_text", "text_only"]

TASKS: tuple[str, ...] = ("generation", "classification", "cloze", "qa", "choice")
MODALITIES: tuple[str, ...] = ("image_text", "text_only")


@dataclass
class Sample:
    """One question about one profile.

    ``answer`` is what the model should produce: the option letter for classification (MLLMU's
    MCQ format) and choice (CLEAR's, as MMUnlearner asks it), the missing word(s) for cloze, a
    sentence for generation, free text for ``qa`` (plain fine-tuning pairs without a task
    format, as in the official ``ft_Data``).
    ``question`` is the raw question (without options or format instructions); prompt
    building lives in :mod:`unlearn.data.prompts`.
    """

    profile_id: str
    question: str
    answer: str
    task: Task
    modality: Modality
    split: str = ""
    image: Image.Image | None = None
    options: dict[str, str] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def has_image(self) -> bool:
        return self.modality == "image_text" and self.image is not None
