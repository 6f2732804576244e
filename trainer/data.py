"""The question mixes both phases stand on: SEM's balanced known / needs-search mix, the held-out halves, and the
check that splits share no question (by normalised text, which the labels' frozen split hashes too). The benchmark
loaders live in `sem.evaldata.benchmarks`; the model's own labels in `trainer.evals.labels`.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from collections.abc import Callable, Iterable

from sem.evaldata.benchmarks import (
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
from sem.scoring import normalize_answer

__all__ = [
    "KNOWN",
    "NEEDS_SEARCH",
    "SOURCES",
    "Example",
    "Paragraph",
    "balanced_mix",
    "check_disjoint",
    "class_balance",
    "drop_overlaps",
    "held_out_halves",
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
    "question_key",
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


def question_key(example: Example) -> str:
    """What split disjointness is checked on: the normalised question text (ids differ across copies of a row).

    >>> question_key(Example("a", "Who wrote  *Hamlet*?", ("x",), "needs_search", "t"))
    'who wrote hamlet'
    """
    return normalize_answer(example.question)


def held_out_halves(examples: list[Example]) -> tuple[list[Example], list[Example]]:
    """Split held-out questions into dev and test by a hash of their normalised text: stable across runs and
    machines, and the same question text always lands on the same side."""
    halves: tuple[list[Example], list[Example]] = ([], [])
    for example in examples:
        digest = hashlib.sha256(question_key(example).encode()).digest()
        halves[digest[0] & 1].append(example)
    return halves


def drop_overlaps(examples: list[Example], earlier: Iterable[Example]) -> list[Example]:
    """The examples whose normalised question text is not among `earlier`'s."""
    seen = {question_key(e) for e in earlier}
    return [e for e in examples if question_key(e) not in seen]


def check_disjoint(**splits: list[Example]) -> None:
    """Raise ValueError naming the first pair of splits that share a normalised question text."""
    keys = {name: {question_key(e) for e in rows} for name, rows in splits.items()}
    names = list(keys)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            shared = keys[a] & keys[b]
            if shared:
                raise ValueError(f"{a} and {b} share {len(shared)} questions, e.g. {sorted(shared)[0]!r}")


def class_balance(examples: Iterable[Example]) -> dict[str, int]:
    """How many examples of each kind (`known`, `needs_search`), sorted by kind."""
    return dict(sorted(Counter(e.kind for e in examples).items()))


def build_splits(source: str, per_class: int, dev_per_class: int, seed: int = 0,
                 relabel: Callable[[list[Example]], tuple[list[Example], list[Example]]] | None = None,
                 ) -> dict[str, list[Example]]:  # fmt: skip
    """`trainer data`'s splits: a balanced train mix, a dev mix to choose recipes on and a frozen test mix, dev and
    test from the datasets' held-out splits (halved by question text), disjoint from train and from each other.
    `relabel` splits the training pool into (needs search, known) by the model's own answers instead of by set."""
    needs = load_source("musique", source, "train") + load_source("hotpotqa", source, "train")
    known = load_source("mmlu", source, "train") + load_source("gsm8k", source, "train", limit=500)
    held_out = load_source("musique", source, "dev") + load_source("hotpotqa", source, "dev")
    dev_needs, test_needs = held_out_halves(held_out)
    dev_known, test_known = load_source("mmlu", source, "dev"), load_source("mmlu", source, "test")
    if relabel is not None:
        needs, known = relabel(needs + known)
    train = balanced_mix(needs, known, per_class, seed)
    dev_needs, dev_known = drop_overlaps(dev_needs, train), drop_overlaps(dev_known, train)
    test_needs, test_known = drop_overlaps(test_needs, train + dev_needs), drop_overlaps(test_known, train + dev_known)
    splits = {"train": train, "dev": balanced_mix(dev_needs, dev_known, dev_per_class, seed),
              "test": balanced_mix(test_needs, test_known, dev_per_class, seed)}  # fmt: skip
    check_disjoint(**splits)
    return splits
