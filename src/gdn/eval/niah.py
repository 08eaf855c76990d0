"""Single needle in a haystack (S-NIAH, after RULER's niah_single_1/2/3), generated locally from a seed.

    task 1: a repeated-sentence haystack ("noise"), a 7-digit number as the needle
    task 2: an essay-like haystack, a 7-digit number as the needle
    task 3: an essay-like haystack, a UUID as the needle

The prompt announces the hidden value, holds the haystack with the needle sentence at the requested depth
(0 = first sentence, 1 = last), then asks for the value and opens the answer, so a greedy continuation should
be the value. The essay haystack is prose assembled from word lists by a seeded generator: no download, the same
text for the same seed. Prompts are sized in tokens of the run's own tokenizer: the longest haystack whose
whole prompt fits the requested length. A sample scores 1 when the continuation contains the value.
"""
from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from gdn.eval.generation import SamplingSettings, generate

TASKS = (1, 2, 3)
NOISE = ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.", "There and back again.")

_SUBJECTS = ("the founder", "a good teacher", "every startup", "the reader", "a careful writer", "most investors",
             "the old city", "a young engineer", "the committee", "our neighbour", "the best students",
             "a small company", "the river", "an honest critic", "the library", "every programmer")
_VERBS = ("builds", "questions", "remembers", "ignores", "explains", "discovers", "changes", "measures",
          "defends", "rewrites", "admires", "avoids", "studies", "shapes", "follows", "doubts")
_OBJECTS = ("the first draft", "a difficult problem", "the market", "an unusual idea", "the old rules",
            "a quiet habit", "the whole argument", "the long road", "a new language", "the simple answer",
            "their own mistakes", "the hardest part", "a forgotten book", "the morning light", "the plan")
_ADJECTIVES = ("surprising", "obvious", "rare", "useful", "strange", "important", "easy to miss", "worth noting")
_ADVERBS = ("slowly", "without noticing", "every year", "in the end", "more often than not", "at first",
            "for a while", "almost by accident")
_KEY_WORDS = ("amber", "basil", "cobalt", "dune", "ember", "fjord", "granite", "harbor", "indigo", "juniper",
              "kelp", "lantern", "meadow", "nectar", "orchid", "pepper", "quartz", "raven", "saffron", "tundra")


def essay_sentence(rng: random.Random) -> str:
    subject, verb, obj = rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)
    form = rng.randrange(5)
    if form == 0:
        sentence = f"{subject} {verb} {obj} {rng.choice(_ADVERBS)}."
    elif form == 1:
        sentence = f"when {subject} {verb} {obj}, {rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}."
    elif form == 2:
        sentence = f"it is {rng.choice(_ADJECTIVES)} that {subject} {verb} {obj}."
    elif form == 3:
        sentence = f"few people expect that {subject} {verb} {obj}, but it happens {rng.choice(_ADVERBS)}."
    else:
        sentence = f"{subject} {verb} {obj}, and that is {rng.choice(_ADJECTIVES)}."
    return sentence[0].upper() + sentence[1:]


def haystack_sentences(task: int, count: int, rng: random.Random) -> list[str]:
    if task == 1:
        return [NOISE[i % len(NOISE)] for i in range(count)]
    return [essay_sentence(rng) for _ in range(count)]


@dataclass
class NiahSample:
    prompt: str
    value: str  # the needle's value: what the answer must contain
    depth: float  # requested depth of the needle in the haystack, 0..1
    needle_start: int  # character offset of the needle sentence in `prompt`
    haystack_start: int  # character offsets of the haystack (needle included) in `prompt`
    haystack_end: int


def _value(task: int, rng: random.Random) -> str:
    if task == 3:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return str(rng.randrange(1_000_000, 10_000_000))


def build_prompt(task: int, haystack: Sequence[str], key: str, value: str, depth: float) -> NiahSample:
    kind = "uuid" if task == 3 else "number"
    needle = f"One of the special magic {kind}s for {key} is: {value}."
    at = round(depth * len(haystack))
    head = (f"Some special magic {kind}s are hidden within the following text. Make sure to memorize it. "
            f"I will quiz you about the {kind}s afterwards.\n")
    before, after = " ".join(haystack[:at]), " ".join(haystack[at:])
    body = " ".join(part for part in (before, needle, after) if part)
    tail = (f"\nWhat is the special magic {kind} for {key} mentioned in the provided text? "
            f"The special magic {kind} for {key} mentioned in the provided text is")
    needle_start = len(head) + (len(before) + 1 if before else 0)
    return NiahSample(head + body + tail, value, depth, needle_start, len(head), len(head) + len(body))


def make_sample(task: int, length: int, depth: float, seed: int, index: int,
                count_tokens: Callable[[str], int]) -> NiahSample:
    """The prompt with the longest haystack whose token count is at most `length`."""
    if task not in TASKS:
        raise ValueError(f"S-NIAH task {task!r}: choose from {TASKS}")
    if not 0 <= depth <= 1:
        raise ValueError(f"needle depth must be in [0, 1], got {depth}")
    rng = random.Random(f"s-niah-{task}-{length}-{seed}-{index}")  # str seeds are stable across processes
    key = f"{rng.choice(_KEY_WORDS)}-{rng.choice(_KEY_WORDS)}"
    value = _value(task, rng)
    pool = haystack_sentences(task, max(8, length), rng)  # every sentence is at least one token: enough to fill

    def fits(num_sentences: int) -> bool:
        return count_tokens(build_prompt(task, pool[:num_sentences], key, value, depth).prompt) <= length

    fixed = count_tokens(build_prompt(task, [], key, value, depth).prompt)
    if fixed > length:
        raise ValueError(f"S-NIAH length {length} is too short: the question and needle alone take {fixed} tokens")
    # Bisection for the largest count that fits, from a bracket set by the pool's mean tokens per sentence, so each
    # trial tokenizes about `length` tokens rather than the whole pool.
    per_sentence = count_tokens(" ".join(pool[:32])) / 32
    high = min(len(pool), int(1.5 * (length - fixed) / per_sentence) + 8)
    while high < len(pool) and fits(high):
        high = min(len(pool), 2 * high)
    low = 0  # fits(low) holds; the answer lies in [low, high]
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return build_prompt(task, pool[:low], key, value, depth)


def score(continuation: str, value: str) -> float:
    """1.0 when the generated continuation contains the needle's value, else 0.0 (RULER's string match)."""
    return float(value in continuation)


def sample_depths(num_samples: int) -> list[float]:
    """Depths spread evenly over the haystack, both ends included."""
    return [0.5] if num_samples == 1 else [i / (num_samples - 1) for i in range(num_samples)]


@torch.no_grad()
def niah_accuracy(model: torch.nn.Module, tokenizer, *, tasks: Sequence[int], lengths: Sequence[int],
                  num_samples: int, seed: int, extra_tokens: int = 4) -> dict[str, float]:
    """{"niah/s{task}_acc_len{length}": accuracy over num_samples prompts}, greedy decoding."""
    def count_tokens(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    metrics = {}
    for task in tasks:
        for length in lengths:
            hits = 0.0
            for index, depth in enumerate(sample_depths(num_samples)):
                sample = make_sample(task, length, depth, seed, index, count_tokens)
                prompt_ids = tokenizer.encode(sample.prompt, add_special_tokens=False).ids
                budget = count_tokens(" " + sample.value) + extra_tokens
                new_ids = generate(model, prompt_ids, SamplingSettings(max_new_tokens=budget))
                hits += score(tokenizer.decode(new_ids), sample.value)
            metrics[f"niah/s{task}_acc_len{length}"] = hits / num_samples
    return metrics
