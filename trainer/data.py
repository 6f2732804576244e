"""Training data: SEM's balanced known / needs-search mix and the base-model labelling mode (IKEA's: a question
the model never answers closed-book needs search). The benchmark loaders live in `sem.benchmarks`.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace

from sem.benchmarks import (
    KNOWN,
    NEEDS_SEARCH,
    SOURCES,
    Example,
    Paragraph,
    load_2wiki,
    load_gsm8k,
    load_hotpotqa,
    load_hub,
    load_mmlu,
    load_musique,
    load_nq_open,
    load_source,
    load_triviaqa,
    paragraph_corpus,
    read_jsonl,
    write_jsonl,
)

__all__ = [
    "KNOWN",
    "NEEDS_SEARCH",
    "SOURCES",
    "Example",
    "Paragraph",
    "balanced_mix",
    "class_balance",
    "label_by_pass_rate",
    "load_2wiki",
    "load_gsm8k",
    "load_hotpotqa",
    "load_hub",
    "load_mmlu",
    "load_musique",
    "load_nq_open",
    "load_source",
    "load_triviaqa",
    "paragraph_corpus",
    "read_jsonl",
    "write_jsonl",
]


def balanced_mix(needs_search: list[Example], known: list[Example], per_class: int, seed: int = 0) -> list[Example]:
    """SEM's training mix: `per_class` of each kind, sampled and shuffled deterministically."""
    for name, pool in (("needs_search", needs_search), ("known", known)):
        if len(pool) < per_class:
            raise ValueError(f"only {len(pool)} {name} examples for {per_class} per class")
    rng = random.Random(seed)
    mix = rng.sample(needs_search, per_class) + rng.sample(known, per_class)
    rng.shuffle(mix)
    return mix


def class_balance(examples: Iterable[Example]) -> dict[str, int]:
    """How many examples of each kind (`known`, `needs_search`), sorted by kind."""
    return dict(sorted(Counter(e.kind for e in examples).items()))


def label_by_pass_rate(
    examples: list[Example],
    answer_fn: Callable[[Example, int], list[str]],
    *,
    k: int,
    is_correct: Callable[[str, Example], bool],
) -> list[Example]:
    """Relabel by the base model's closed-book pass rate over k samples: 0 -> needs search, else known."""
    labelled = []
    for example in examples:
        passed = sum(is_correct(answer, example) for answer in answer_fn(example, k))
        labelled.append(replace(example, kind=KNOWN if passed else NEEDS_SEARCH))
    return labelled
