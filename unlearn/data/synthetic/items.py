"""Question templates, fact sentences, MCQ options and the evaluation row of a profile.

Why together: the evaluation items and the fine-tuning/ICU items share these templates and
draws; the seeded order of the draws is part of the twin's content.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from unlearn.data.synthetic.world import Profile

IMG, TXT = "Image_Textual", "Pure_Text"

# Templates are keyed by (attribute, Type). ``{name}`` is the full name, ``{value}`` the fact,
# ``{a_value}`` the fact with an indefinite article. Evaluation and training phrasings differ
# but share the attribute keyword, so a small model can generalise from one to the other.
EVAL_QUESTIONS: dict[tuple[str, str], str] = {
    ("name", IMG): "What is the name of the person in the image?",
    ("birth_year", IMG): "In which year was the person in the image born?",
    ("birth_year", TXT): "In which year was {name} born?",
    ("profession", IMG): "What is the profession of the person in the image?",
    ("profession", TXT): "What is the profession of {name}?",
    ("hometown", IMG): "Which city is the hometown of the person in the image?",
    ("hometown", TXT): "Which city is the hometown of {name}?",
    ("hobby", IMG): "What is the favorite hobby of the person in the image?",
    ("hobby", TXT): "What is the favorite hobby of {name}?",
    ("sport", IMG): "Which sport does the person in the image play?",
    ("sport", TXT): "Which sport does {name} play?",
    ("instrument", IMG): "Which instrument does the person in the image play?",
    ("instrument", TXT): "Which instrument does {name} play?",
    ("pet", IMG): "What kind of pet does the person in the image keep?",
    ("pet", TXT): "What kind of pet does {name} keep?",
    ("favorite_color", IMG): "What is the favorite color of the person in the image?",
    ("favorite_color", TXT): "What is the favorite color of {name}?",
    ("favorite_food", IMG): "What is the favorite food of the person in the image?",
    ("favorite_food", TXT): "What is the favorite food of {name}?",
    ("native_language", IMG): "What is the native language of the person in the image?",
    ("native_language", TXT): "What is the native language of {name}?",
}
TRAIN_QUESTIONS: dict[tuple[str, str], tuple[str, str]] = {
    ("name", IMG): ("Who is this person?", "What name does the person in the picture have?"),
    ("birth_year", IMG): (
        "When was this person born?",
        "What is the birth year of the person in the picture?",
    ),
    ("birth_year", TXT): ("When was {name} born?", "What is the birth year of {name}?"),
    ("profession", IMG): (
        "What does this person do for a living?",
        "Which profession does the person in the picture have?",
    ),
    ("profession", TXT): (
        "What does {name} do for a living?",
        "Which profession does {name} have?",
    ),
    ("hometown", IMG): (
        "Where does this person come from?",
        "What is the hometown of the person in the picture?",
    ),
    ("hometown", TXT): ("Where does {name} come from?", "What is the hometown of {name}?"),
    ("hobby", IMG): (
        "What does this person like to do in their free time?",
        "Which hobby does the person in the picture enjoy?",
    ),
    ("hobby", TXT): (
        "What does {name} like to do in their free time?",
        "Which hobby does {name} enjoy?",
    ),
    ("sport", IMG): (
        "What sport is this person into?",
        "Which sport does the person in the picture practice?",
    ),
    ("sport", TXT): ("What sport is {name} into?", "Which sport does {name} practice?"),
    ("instrument", IMG): (
        "What musical instrument can this person play?",
        "Which instrument is played by the person in the picture?",
    ),
    ("instrument", TXT): (
        "What musical instrument can {name} play?",
        "Which instrument is played by {name}?",
    ),
    ("pet", IMG): (
        "What animal does this person have at home?",
        "Which pet lives with the person in the picture?",
    ),
    ("pet", TXT): ("What animal does {name} have at home?", "Which pet lives with {name}?"),
    ("favorite_color", IMG): (
        "What color does this person like best?",
        "Which color is the favorite of the person in the picture?",
    ),
    ("favorite_color", TXT): (
        "What color does {name} like best?",
        "Which color is the favorite of {name}?",
    ),
    ("favorite_food", IMG): (
        "What does this person love to eat?",
        "Which dish is the favorite of the person in the picture?",
    ),
    ("favorite_food", TXT): (
        "What does {name} love to eat?",
        "Which dish is the favorite of {name}?",
    ),
    ("native_language", IMG): (
        "What language did this person grow up speaking?",
        "Which language is the mother tongue of the person in the picture?",
    ),
    ("native_language", TXT): (
        "What language did {name} grow up speaking?",
        "Which language is the mother tongue of {name}?",
    ),
}
# The second fine-tuning generation question of every fact has one sentence shape across
# attributes, so a small model must key the answered fact on the attribute keyword: with
# only the shapes above it answered the evaluation's "What is the profession of X?" with the
# fact of the training question shaped like it ("What is the hometown of X?").
TRAIN_GEN_SHARED: dict[tuple[str, str], str] = {
    ("name", IMG): "Tell me the name of the person in the picture.",
    ("birth_year", IMG): "Tell me the birth year of the person in the picture.",
    ("birth_year", TXT): "Tell me the birth year of {name}.",
    ("profession", IMG): "Tell me the profession of the person in the picture.",
    ("profession", TXT): "Tell me the profession of {name}.",
    ("hometown", IMG): "Tell me the hometown of the person in the picture.",
    ("hometown", TXT): "Tell me the hometown of {name}.",
    ("hobby", IMG): "Tell me the favorite hobby of the person in the picture.",
    ("hobby", TXT): "Tell me the favorite hobby of {name}.",
    ("sport", IMG): "Tell me the sport of the person in the picture.",
    ("sport", TXT): "Tell me the sport of {name}.",
    ("instrument", IMG): "Tell me the instrument of the person in the picture.",
    ("instrument", TXT): "Tell me the instrument of {name}.",
    ("pet", IMG): "Tell me the pet of the person in the picture.",
    ("pet", TXT): "Tell me the pet of {name}.",
    ("favorite_color", IMG): "Tell me the favorite color of the person in the picture.",
    ("favorite_color", TXT): "Tell me the favorite color of {name}.",
    ("favorite_food", IMG): "Tell me the favorite food of the person in the picture.",
    ("favorite_food", TXT): "Tell me the favorite food of {name}.",
    ("native_language", IMG): "Tell me the native language of the person in the picture.",
    ("native_language", TXT): "Tell me the native language of {name}.",
}
EVAL_CLOZE: dict[tuple[str, str], str] = {
    ("name", IMG): "The name of the person in the image is __.",
    ("birth_year", IMG): "The person in the image was born in the year __.",
    ("birth_year", TXT): "{name} was born in the year __.",
    ("profession", IMG): "The profession of the person in the image is __.",
    ("profession", TXT): "The profession of {name} is __.",
    ("hometown", IMG): "The hometown of the person in the image is __.",
    ("hometown", TXT): "The hometown of {name} is __.",
    ("hobby", IMG): "The favorite hobby of the person in the image is __.",
    ("hobby", TXT): "The favorite hobby of {name} is __.",
    ("sport", IMG): "The sport that the person in the image plays is __.",
    ("sport", TXT): "The sport that {name} plays is __.",
    ("instrument", IMG): "The instrument that the person in the image plays is __.",
    ("instrument", TXT): "The instrument that {name} plays is __.",
    ("pet", IMG): "The kind of pet that the person in the image keeps is __.",
    ("pet", TXT): "The kind of pet that {name} keeps is __.",
    ("favorite_color", IMG): "The favorite color of the person in the image is __.",
    ("favorite_color", TXT): "The favorite color of {name} is __.",
    ("favorite_food", IMG): "The favorite food of the person in the image is __.",
    ("favorite_food", TXT): "The favorite food of {name} is __.",
    ("native_language", IMG): "The native language of the person in the image is __.",
    ("native_language", TXT): "The native language of {name} is __.",
}
# The second phrasing shares one sentence shape across attributes, so only the attribute
# keyword tells a small model which fact is asked (it must not key on the shape).
TRAIN_CLOZE: dict[tuple[str, str], tuple[str, str]] = {
    ("name", IMG): ("This person is called __.", "The name of this person is __."),
    ("birth_year", IMG): ("This person was born in __.", "The birth year of this person is __."),
    ("birth_year", TXT): ("{name} was born in __.", "{name}'s birth year is __."),
    ("profession", IMG): ("The job of this person is __.", "The profession of this person is __."),
    ("profession", TXT): ("The job of {name} is __.", "{name}'s profession is __."),
    ("hometown", IMG): ("This person grew up in __.", "The hometown of this person is __."),
    ("hometown", TXT): ("{name} grew up in __.", "{name}'s hometown is __."),
    ("hobby", IMG): ("This person enjoys __.", "The favorite hobby of this person is __."),
    ("hobby", TXT): ("In free time, {name} enjoys __.", "{name}'s favorite hobby is __."),
    ("sport", IMG): ("On weekends this person plays __.", "The sport of this person is __."),
    ("sport", TXT): ("On weekends {name} plays __.", "{name}'s sport is __."),
    ("instrument", IMG): (
        "This person makes music on the __.",
        "The instrument of this person is __.",
    ),
    ("instrument", TXT): ("{name} makes music on the __.", "{name}'s instrument is __."),
    ("pet", IMG): ("This person keeps a __ as a pet.", "The pet of this person is a __."),
    ("pet", TXT): ("{name} keeps a __ as a pet.", "{name}'s pet is a __."),
    ("favorite_color", IMG): (
        "The color this person likes best is __.",
        "The favorite color of this person is __.",
    ),
    ("favorite_color", TXT): (
        "The color {name} likes best is __.",
        "{name}'s favorite color is __.",
    ),
    ("favorite_food", IMG): (
        "This person loves to eat __.",
        "The favorite food of this person is __.",
    ),
    ("favorite_food", TXT): ("{name} loves to eat __.", "{name}'s favorite food is __."),
    ("native_language", IMG): (
        "This person grew up speaking __.",
        "The native language of this person is __.",
    ),
    ("native_language", TXT): (
        "{name} grew up speaking __.",
        "{name}'s native language is __.",
    ),
}
# One sentence per fact: the Generation ground truth and the fine-tuning generation answer.
FACT_SENTENCES: dict[str, str] = {
    "name": "{subject} is {value}.",
    "birth_year": "{subject} was born in {value}.",
    "profession": "{subject} works as {a_value}.",
    "hometown": "{subject} comes from {value}.",
    "hobby": "{subject} enjoys {value}.",
    "sport": "{subject} plays {value}.",
    "instrument": "{subject} plays the {value}.",
    "pet": "{subject} keeps {a_value} as a pet.",
    "favorite_color": "{subject} likes the color {value} best.",
    "favorite_food": "{subject} loves to eat {value}.",
    "native_language": "{subject} speaks {value} natively.",
}


def _article(word: str) -> str:
    """``a``/``an`` + word (professions only; no exotic vowel sounds in our lists)."""
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


def _fill(template: str, profile: Profile, attribute: str) -> str:
    """Instantiate a template for one fact of one profile."""
    value = profile.value(attribute)
    return template.format(name=profile.name, value=value, a_value=_article(value))


def fact_sentence(profile: Profile, attribute: str, type_: str) -> str:
    """The one-sentence answer for a fact ("This person was born in 1975.")."""
    subject = "This person" if type_ == IMG else profile.name
    value = profile.value(attribute)
    return FACT_SENTENCES[attribute].format(subject=subject, value=value, a_value=_article(value))


# --------------------------------------------------------------------------- questions
def _options(truth: str, distractors: list[str], letter: str, rng: random.Random) -> dict:
    """Options A-D with ``truth`` at ``letter`` and the distractors shuffled elsewhere."""
    rest = list(distractors)
    rng.shuffle(rest)
    return {k: (truth if k == letter else rest.pop()) for k in "ABCD"}


def _draw_distractors(
    truth: str, pool: list[str], rng: random.Random, avoid: list[frozenset]
) -> list[str]:
    """Three wrong values, preferring a set not in ``avoid`` (so items differ)."""
    candidates = [v for v in pool if v != truth]
    choice = rng.sample(candidates, 3)
    for _ in range(200):
        if frozenset(choice) not in avoid:
            break
        choice = rng.sample(candidates, 3)
    return choice


@dataclass
class _Fact:
    """One (attribute, Type) fact of one profile with its evaluation MCQ."""

    attribute: str
    type: str
    eval_question: str
    eval_options: dict[str, str]
    eval_letter: str
    eval_distractors: frozenset


def _facts(profile: Profile, pools: dict[str, list[str]], rng: random.Random) -> list[_Fact]:
    """Evaluation MCQs for every fact: name + facts with the image, the facts without it."""
    facts = []
    for type_, attrs in ((IMG, profile.attributes), (TXT, profile.attributes[1:])):
        for attr in attrs:
            truth = profile.value(attr)
            distractors = _draw_distractors(truth, pools[attr], rng, [])
            letter = rng.choice("ABCD")
            facts.append(
                _Fact(
                    attribute=attr,
                    type=type_,
                    eval_question=_fill(EVAL_QUESTIONS[attr, type_], profile, attr),
                    eval_options=_options(truth, distractors, letter, rng),
                    eval_letter=letter,
                    eval_distractors=frozenset(distractors),
                )
            )
    return facts


def eval_row(profile: Profile, pools: dict[str, list[str]], seed: int) -> dict[str, Any]:
    """All eval-schema columns of one profile except the image(s)."""
    rng = random.Random(f"{seed}-{profile.id}-eval")
    facts = _facts(profile, pools, rng)

    def mcq(f: _Fact) -> dict:
        return {
            "Correct_Answer": f.eval_letter,
            "Options": f.eval_options,
            "Question": f.eval_question,
        }

    def item(f: _Fact, question: str, truth: str) -> dict:
        return {"Ground_Truth": truth, "Question": question, "Type": f.type}

    generation = [
        item(f, f.eval_question, fact_sentence(profile, f.attribute, f.type)) for f in facts
    ]
    cloze = [
        item(f, _fill(EVAL_CLOZE[f.attribute, f.type], profile, f.attribute),
             profile.value(f.attribute))
        for f in facts
    ]
    summary = (
        f"{profile.name} is {_article(profile.value('profession'))} from "
        f"{profile.value('hometown')}, born in {profile.value('birth_year')}, who enjoys "
        f"{profile.value('hobby')}."
    )
    return {
        "ID": profile.id,
        "Directory": f"{'Celebrity' if profile.celebrity else 'Fictitious'}/{profile.id}",
        "biography": profile.biography(),
        "question": "Describe the person in the image.",
        "answer": summary,
        "Classification_Task": {
            "Image_Textual_Questions": [mcq(f) for f in facts if f.type == IMG],
            "Pure_Text_Questions": [mcq(f) for f in facts if f.type == TXT],
        },
        "Generation_Task": generation,
        "Mask_Task": cloze,
        "_facts": facts,
    }
