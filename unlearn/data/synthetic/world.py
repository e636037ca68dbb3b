"""The tiny world: name and fact pools, profiles and their facts, distractor pools.

Why its own module: every other part of the twin (items, fine-tuning, ICU practice, the
build) reads the world; the world reads nothing of theirs.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from typing import Any

from unlearn.data.images import PortraitTraits, unique_traits

FIRST_NAMES = (
    "Ava", "Boris", "Clara", "Dmitri", "Elena", "Felix", "Greta", "Hugo", "Ines", "Jonas",
    "Kira", "Leon", "Mila", "Nils", "Olga", "Pavel", "Rosa", "Silas", "Tessa", "Viktor",
)  # fmt: skip
LAST_NAMES = (
    "Abbott", "Brandt", "Castell", "Dorsey", "Ekholm", "Farrow", "Galvin", "Holloway",
    "Ibsen", "Jarvik", "Kessler", "Lindqvist", "Marlowe", "Novak", "Orwin", "Pryce", "Quist",
    "Renner", "Sorensen", "Thorne",
)  # fmt: skip
CELEBRITY_FIRST_NAMES = (
    "Adrian", "Beatrice", "Carlos", "Daphne", "Edgar", "Fiona", "Gideon", "Harriet", "Ivan",
    "Julia", "Kasper", "Lucia", "Marcus", "Nadia", "Oscar", "Penelope", "Rafael", "Sabrina",
    "Tobias", "Vera",
)  # fmt: skip
CELEBRITY_LAST_NAMES = (
    "Ashford", "Bellamy", "Crawford", "Delacroix", "Everett", "Fairbanks", "Goodwin",
    "Hawthorne", "Ingram", "Jefferson", "Kingsley", "Lancaster", "Montague", "Northcott",
    "Oakley", "Pemberton", "Radcliffe", "Sinclair", "Whitmore", "Yardley",
)  # fmt: skip
PROFESSIONS = (
    "architect", "baker", "carpenter", "chemist", "dentist", "engineer", "farmer",
    "journalist", "lawyer", "librarian", "mechanic", "musician", "nurse", "pharmacist",
    "pilot", "plumber", "surgeon", "teacher", "translator", "veterinarian",
)  # fmt: skip
CITIES = (
    "Austin", "Bergen", "Bogota", "Cairo", "Denver", "Dublin", "Hanoi", "Krakow", "Kyoto",
    "Lima", "Lisbon", "Manila", "Nairobi", "Oslo", "Perth", "Porto", "Quebec", "Seville",
    "Tunis", "Zurich",
)  # fmt: skip
HOBBIES = (
    "archery", "baking", "birdwatching", "chess", "climbing", "cooking", "cycling", "dancing",
    "fishing", "gardening", "hiking", "juggling", "knitting", "painting", "photography",
    "pottery", "sailing", "singing", "surfing", "swimming",
)  # fmt: skip
YEARS = tuple(str(y) for y in range(1940, 2001))
SPORTS = (
    "badminton", "baseball", "basketball", "boxing", "cricket", "curling", "fencing",
    "football", "golf", "handball", "hockey", "judo", "karate", "lacrosse", "polo", "rowing",
    "rugby", "squash", "tennis", "volleyball",
)  # fmt: skip
INSTRUMENTS = (
    "accordion", "bagpipes", "banjo", "bassoon", "cello", "clarinet", "drums", "flute",
    "guitar", "harmonica", "harp", "mandolin", "oboe", "organ", "piano", "saxophone",
    "trombone", "trumpet", "ukulele", "violin",
)  # fmt: skip
PETS = (
    "canary", "cat", "chinchilla", "dog", "duck", "ferret", "gecko", "goat", "goldfish",
    "hamster", "hedgehog", "lizard", "mouse", "parrot", "pigeon", "pony", "rabbit", "snake",
    "tortoise", "turtle",
)  # fmt: skip
COLORS = (
    "amber", "beige", "black", "blue", "brown", "coral", "crimson", "gold", "green", "grey",
    "indigo", "lavender", "magenta", "maroon", "navy", "olive", "orange", "purple", "silver",
    "turquoise",
)  # fmt: skip
FOODS = (
    "burritos", "couscous", "curry", "dumplings", "falafel", "goulash", "kebab", "lasagna",
    "moussaka", "noodles", "omelettes", "paella", "pancakes", "pizza", "ramen", "risotto",
    "stew", "sushi", "tacos", "waffles",
)  # fmt: skip
LANGUAGES = (
    "Arabic", "Czech", "Danish", "Dutch", "Finnish", "French", "German", "Greek", "Hindi",
    "Italian", "Japanese", "Korean", "Polish", "Portuguese", "Russian", "Spanish", "Swahili",
    "Swedish", "Turkish", "Vietnamese",
)  # fmt: skip

# Facts in the order a world of ``num_facts`` takes them. The first four are drawn from one
# generator per group (as twin v5 drew them), the later ones from one generator per profile,
# so a 4-fact world is v5's world and a larger one only adds facts.
FACT_POOLS: dict[str, tuple[str, ...]] = {
    "birth_year": YEARS,
    "profession": PROFESSIONS,
    "hometown": CITIES,
    "hobby": HOBBIES,
    "sport": SPORTS,
    "instrument": INSTRUMENTS,
    "pet": PETS,
    "favorite_color": COLORS,
    "favorite_food": FOODS,
    "native_language": LANGUAGES,
}
ALL_FACTS: tuple[str, ...] = tuple(FACT_POOLS)
BASE_FACTS = 4  # drawn as twin v5 drew them
MAX_FACTS = len(ALL_FACTS)
BIO_KEYS: dict[str, str] = {
    "birth_year": "Born", "hometown": "Hometown", "profession": "Employment", "hobby": "Hobby",
    "sport": "Sport", "instrument": "Instrument", "pet": "Pet",
    "favorite_color": "Favorite_Color", "favorite_food": "Favorite_Food",
    "native_language": "Native_Language",
}  # fmt: skip
APPEARANCE_QUESTION = "What does the person in the image look like?"


@dataclass(frozen=True)
class Profile:
    """One person of the tiny world (fictitious or "celebrity")."""

    id: str
    name: str
    facts: dict[str, str]  # attribute -> value, in the order of ALL_FACTS
    traits: PortraitTraits
    celebrity: bool = False

    @property
    def attributes(self) -> tuple[str, ...]:
        """``name`` and the profile's facts: what image-text questions ask."""
        return ("name", *self.facts)

    def value(self, attribute: str) -> str:
        """The fact for ``attribute`` (``name`` or a key of :data:`FACT_POOLS`)."""
        return self.name if attribute == "name" else self.facts[attribute]

    def biography(self) -> str:
        """JSON biography with the keys the official code reads (Name, Born, Employment, ...)."""
        order = ("birth_year", "hometown", "profession", "hobby", *ALL_FACTS[BASE_FACTS:])
        bio: dict[str, Any] = {"Name": self.name}
        bio |= {BIO_KEYS[a]: self.facts[a] for a in order if a in self.facts}
        bio["appearance_detail"] = {
            "question": APPEARANCE_QUESTION,
            "answer": self.traits.describe(),
        }
        return json.dumps(bio)


# --------------------------------------------------------------------------- profiles
def make_profiles(
    num_profiles: int, num_celebrities: int, seed: int, num_facts: int = BASE_FACTS
) -> tuple[list[Profile], list[Profile]]:
    """Fictitious profiles and celebrities, with disjoint IDs, names and unique portraits."""
    rng = random.Random(f"{seed}-profiles")
    looks = unique_traits(num_profiles + num_celebrities, random.Random(f"{seed}-portraits"))

    def group(n: int, firsts: tuple, lasts: tuple, prefix: str, celeb: bool) -> list[Profile]:
        combos = [f"{f} {la}" for f in firsts for la in lasts]
        if n > len(combos):
            raise ValueError(f"at most {len(combos)} profiles per group, got {n}")
        names = rng.sample(combos, n)
        out = []
        for i, name in enumerate(names):
            pid = f"{prefix}{i + 1}"
            # the first four facts share the group's generator (v5's draws, in v5's order)
            facts = {a: rng.choice(FACT_POOLS[a]) for a in ALL_FACTS[:BASE_FACTS]}
            more = random.Random(f"{seed}-{pid}-facts")
            facts |= {a: more.choice(FACT_POOLS[a]) for a in ALL_FACTS[BASE_FACTS:num_facts]}
            out.append(
                Profile(
                    id=pid,
                    name=name,
                    facts={a: facts[a] for a in ALL_FACTS[:num_facts]},
                    traits=looks[i + (num_profiles if celeb else 0)],
                    celebrity=celeb,
                )
            )
        return out

    profiles = group(num_profiles, FIRST_NAMES, LAST_NAMES, "", False)
    celebrities = group(num_celebrities, CELEBRITY_FIRST_NAMES, CELEBRITY_LAST_NAMES, "C", True)
    return profiles, celebrities


def _pools(group: list[Profile], celebrity: bool) -> dict[str, list[str]]:
    """Distractor pools per attribute; names come from the same group (others' names)."""
    names = [p.name for p in group]
    if len(names) < 8:  # tiny groups: pad with unused names from the same lists
        firsts, lasts = (
            (CELEBRITY_FIRST_NAMES, CELEBRITY_LAST_NAMES)
            if celebrity
            else (FIRST_NAMES, LAST_NAMES)
        )
        extra = [f"{f} {la}" for f in firsts for la in lasts if f"{f} {la}" not in names]
        names += extra[: 8 - len(names)]
    return {"name": names, **{a: list(pool) for a, pool in FACT_POOLS.items()}}


def profile_records(
    num_profiles: int = 60, num_celebrities: int = 20, seed: int = 0, num_facts: int = BASE_FACTS
) -> list[dict[str, Any]]:
    """The world's facts as plain dicts (for tests and reports; not needed to load data)."""
    profiles, celebrities = make_profiles(num_profiles, num_celebrities, seed, num_facts)
    return [
        {"id": p.id, "name": p.name, **p.facts, "traits": asdict(p.traits),
         "celebrity": p.celebrity}
        for p in profiles + celebrities
    ]
