"""The tiny models' tokenizer: a byte-level BPE trained offline on a fixed corpus.

Lives apart from the model builders because it is the one piece with its own data (the corpus
of fictitious biographies) and its own per-family special tokens; the tokenizer's ids then fix
the config's vocabulary and special-token ids.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from unlearn.models.families import check_arch

LLAVA_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
QWEN_SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>",
]

# Tokenizer corpus: generic English plus the vocabulary of fictitious-profile benchmarks, so names,
# years, professions, cities and hobbies cost few tokens.
_FIRST = (
    "Ava Boris Chloe Dmitri Elena Farid Greta Hiro Ines Jonas Kira Liam Mara Nico Olga Pavel Quinn "
    "Rosa Sven Tara Umar Vera Wren Xavi Yara Zane Alice Benjamin Carlos Daniel Emma Felix Grace "
    "Henry Isabel James Julia Karen Lucas Maria Michael Nora Oliver Priya Rafael Sarah Thomas "
    "Victor William Zoe Aisha Amir Anna David Diego Fatima Hannah Ivan Jack Kenji Laura Leo Lina "
    "Mateo Mei Noah Omar Paula Ravi Sofia Sophie Yuki Wei Ahmed Chen Elias Helen Jorge Lars Leila "
    "Marco Nadia Peter Robert Samuel Simon Emily Anton Clara Hugo Ingrid Joseph Martin Rachel"
).split()
_LAST = (
    "Abbott Brandt Castillo Dorsey Ekwueme Falk Gorski Halloran Ivers Jovanovic Kessler Lindqvist "
    "Moreau Novak Okafor Petrov Quist Rinaldi Sato Thorne Ueda Varga Whitlock Xu Yilmaz Zielinski "
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Wilson Anderson Taylor Moore Jackson Martin Lee Thompson White Harris Clark Lewis Walker "
    "Hall Young King Wright Scott Green Baker Adams Nelson Hill Campbell Mitchell Roberts Carter "
    "Turner Phillips Parker Evans Edwards Collins Stewart Morris Murphy Cook Rogers Morgan Cooper "
    "Peterson Reed Bailey Bell Kelly Howard Ward Cox Richardson Wood Watson Brooks Bennett Gray "
    "Hughes Price Sanders Patel Nguyen Kim Singh Muller Schmidt Fischer Weber Rossi Romano Silva "
    "Santos Dubois Laurent Ivanova Kowalski Tanaka Suzuki Wang Zhang Liu Khan Ali Hassan Larsen "
    "Jensen Berg"
).split()
_JOBS = (
    "architect baker chemist dentist engineer farmer geologist historian illustrator journalist "
    "linguist mechanic nurse oceanographer pilot surgeon teacher veterinarian welder zoologist "
    "doctor lawyer writer painter musician photographer chef librarian accountant scientist "
    "professor pharmacist electrician carpenter designer programmer economist biologist "
    "physicist astronomer translator editor actor dancer firefighter police officer "
    "software developer graphic designer data analyst civil engineer social worker"
).split()
_CITIES = (
    "London Paris Berlin Madrid Rome Lisbon Vienna Prague Warsaw Athens Dublin Oslo Stockholm "
    "Helsinki Copenhagen Amsterdam Brussels Zurich Istanbul Cairo Lagos Nairobi Tokyo Seoul "
    "Beijing Shanghai Mumbai Delhi Bangkok Singapore Sydney Melbourne Toronto Vancouver Chicago "
    "Boston Seattle Denver Houston Miami Atlanta Dallas Phoenix Lima Bogota Santiago"
).split() + ["New York", "Los Angeles", "San Francisco", "Mexico City", "Buenos Aires",
             "Rio de Janeiro", "Cape Town", "Hong Kong"]
_HOBBIES = [
    "painting", "hiking", "reading", "cooking", "gardening", "chess", "photography", "cycling",
    "swimming", "running", "fishing", "knitting", "dancing", "singing", "playing the piano",
    "playing the guitar", "birdwatching", "pottery", "woodworking", "rock climbing", "yoga",
    "skiing", "surfing", "sailing", "writing poetry", "collecting stamps", "baking", "tennis",
    "astronomy", "volunteering", "traveling", "camping",
]
_QUESTIONS = [
    "What is the name of the person in the image?",
    "Who is the person shown in this picture?",
    "What is the profession of this person?",
    "What does this person do for a living?",
    "In which year was this person born?",
    "Where was this person born?",
    "Which city does this person live in?",
    "What is the hobby of this person?",
    "What does this person enjoy doing in their free time?",
    "Describe the person in the image.",
    "Answer the question with the letter of the correct option.",
    "Fill in the blank: This person works as a __.",
    "I do not know. Sorry, I cannot help with that. I'm not sure who this is.",
    "Yes. No. The answer is A. The answer is B. The answer is C. The answer is D.",
]


def default_corpus(n: int = 3000, seed: int = 0) -> list[str]:
    """Deterministic synthetic biographies and questions to train the tiny tokenizers on."""
    rng = random.Random(seed)
    out = list(_QUESTIONS)
    # Names appear both first (Qwen answers follow a newline) and after a space (LLaVA answers).
    for _ in range(n):
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        pron = rng.choice(["He", "She", "They"])
        out.append(
            f"{name} was born in {rng.randint(1940, 2000)} in {rng.choice(_CITIES)}. "
            f"{pron} works as a {rng.choice(_JOBS)} in {rng.choice(_CITIES)} and enjoys "
            f"{rng.choice(_HOBBIES)}. This is {name}. {rng.choice(_QUESTIONS)} "
            f"A. {rng.choice(_JOBS)} B. {rng.choice(_CITIES)} C. {rng.randint(1940, 2000)} "
            f"D. {rng.choice(_HOBBIES)}"
        )
    out += [" ".join(str(y) for y in range(1900, 2030)), " ".join("0123456789")]
    return out


def build_tokenizer(
    arch: str, vocab_size: int = 1024, extra_corpus: Sequence[str] | None = None
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer with the family's special tokens (no ``<unk>`` ever).

    LLaVA gets Llama-style specials (``<s>`` prepended, ``</s>`` eos); Qwen gets no BOS,
    ``<|im_end|>`` eos and the vision tokens. ``padding_side="left"`` is passed to the
    constructor because, set as an attribute, it is not saved (G8). ``extra_corpus`` (e.g. the
    benchmark's own texts) is repeated up to the size of the default corpus so that its names get
    merges of their own (unseen names: ~2-4 tokens instead of ~9-11 at vocab 1024).
    """
    check_arch(arch)
    specials = LLAVA_SPECIALS if arch == "llava" else QWEN_SPECIALS
    tk = Tokenizer(models.BPE(unk_token=None))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = default_corpus()
    if extra_corpus:
        corpus += list(extra_corpus) * max(1, len(corpus) // len(extra_corpus))
    tk.train_from_iterator(corpus, trainer=trainer)
    if arch == "llava":
        bos = tk.token_to_id("<s>")
        tk.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
        )
        return PreTrainedTokenizerFast(
            tokenizer_object=tk, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
            pad_token="<pad>", extra_special_tokens={"image_token": "<image>"},
            padding_side="left",
        )
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        extra_special_tokens={
            "image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
            "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>",
        },
        padding_side="left",
    )
