"""Running gates: every question answered once per policy (greedy), what each answer did and cost (`Outcome`), the
oracle gate, and the `confidence` gate's threshold chosen by replaying what the loop does at every threshold."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sem.loop import LoopOptions, SearchLoop, SearchPolicy, Trace
from sem.protocol import CONFIDENCE_OPEN, RESULT_OPEN, final_answer
from sem.scoring import f1
from trainer.evals.decision import first_turn
from trainer.evals.labels import Label, found_in, is_right
from trainer.evals.measures import (
    KNOWN,
)
from trainer.evals.runner import bounded


@dataclass(slots=True)
class Outcome:
    """What one policy did on one question: the one record every evaluation writes (`trainer eval-gate`'s
    outcomes.jsonl, `trainer eval`'s results.json) and every report reads.

    Judged against labels (`trainer label`), `klass` is the label's known / helped / neither and `f1` token F1; in
    `trainer eval`, `klass` is the data's kind (known / needs_search) and `f1` the benchmark's score (the letter for
    multiple choice, the number for GSM8K; evaluate.outcome). `right` is EVALUATION.md's rule (labels.is_right) in
    both; `extra` holds what only some runs measure (`em` in `trainer eval`, a gate's own score, reading)."""

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


def before_search(trace: Trace) -> str:
    """What the model wrote before any search (its first turn)."""
    return next((seg.text for seg in trace.segments if seg.generated), "")


def confidence_note(trace: Trace) -> str:
    """The note the `confidence_note` loop inserted right after the first answer, or ""."""
    segments = trace.segments
    first = next((i for i, seg in enumerate(segments) if seg.generated), None)
    if first is None or first + 1 >= len(segments) or segments[first + 1].generated:
        return ""
    text = segments[first + 1].text
    return text if text.lstrip().startswith(CONFIDENCE_OPEN) else ""


def first_answer(trace: Trace) -> str:
    """The answer before any search: the first <answer>, else what the first turn ends with."""
    return trace.answers[0] if trace.answers else final_answer(before_search(trace))


def outcome_of(lab: Label, policy: str, trace: Trace, latency_s: float) -> Outcome:
    first, first_text = first_answer(trace), before_search(trace)
    extra: dict[str, Any] = {}
    if policy == "auto" and (turn := first_turn(first_text)):
        extra["first_turn"] = turn + confidence_note(trace)  # what the decision read
    if policy == "confidence":
        extra["gate"] = confidence_gate(trace)
    if trace.decision_p_search is not None:  # the decision read at a cut (decision_threshold)
        extra["decision_p_search"] = round(trace.decision_p_search, 5)
    if trace.searches:  # did what it retrieved hold the answer? (the reading measure: right when it did)
        inserted = (seg.text for seg in trace.segments if not seg.generated)
        results = "".join(text for text in inserted if text.lstrip().startswith(RESULT_OPEN))
        extra["gold_in_results"] = found_in(results, lab.example) is not None
    if trace.fresh_from is not None:  # read_fresh: the answer after the search was read without the first one
        extra["read_fresh"] = True
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
    confidence_note: bool = False,
    decision_threshold: float | None = None,
    read_fresh: bool = False,
    concurrency: int = 8,
) -> list[Outcome]:
    """Answer every question once per policy (greedy), timing each answer."""

    def job(lab: Label, policy: str) -> Callable[[], Any]:
        options = LoopOptions(policy=SearchPolicy(policy), max_tokens=max_tokens, max_searches=max_searches,
                              confidence_threshold=confidence_threshold, confidence_note=confidence_note,
                              decision_threshold=decision_threshold, read_fresh=read_fresh)  # fmt: skip

        async def run() -> Outcome:
            started = time.perf_counter()
            trace = await loop.run(lab.example.prompt_text(), options)
            return outcome_of(lab, policy, trace, time.perf_counter() - started)

        return run

    return await bounded([job(lab, p) for p in policies for lab in labels], concurrency, "answering")


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
    return _replay(outcomes, thresholds, lambda o, t: (searched_at(o, t), True))


def decision_sweep(outcomes: Sequence[Outcome], thresholds: Sequence[float]) -> list[dict[str, Any]]:
    """Accuracy and searches per question of `auto` at each cut on its P(search) after the note, from runs at cut 0
    (every read decision searched), replaying what the loop does: above t the answer after the search counts, else
    the first answer; an answer whose decision was never read (no closed first answer) counts as it went.

    >>> o = Outcome("q", "world", KNOWN, "auto", "b", "a", False, 0.0, 1, 9, 3, 0.1, None,
    ...             {"decision_p_search": 0.7, "first_right": True})
    >>> [(r["threshold"], r["accuracy"], r["searches_per_question"]) for r in decision_sweep([o], [0.5, 0.8])]
    [(0.5, 0.0, 1.0), (0.8, 1.0, 0.0)]
    """

    def at_cut(o: Outcome, t: float) -> tuple[bool, bool]:
        p = o.extra.get("decision_p_search")
        return (bool(o.searches), False) if p is None else (p > t, True)

    return _replay(outcomes, thresholds, at_cut)


def _replay(
    outcomes: Sequence[Outcome], thresholds: Sequence[float], gate: Callable[[Outcome, float], tuple[bool, bool]]
) -> list[dict[str, Any]]:
    """One row per threshold from runs that searched after every gated first answer: `gate(o, t)` says whether the
    replayed loop searches and whether the gate read this answer at all (one it did not keeps its run's answer)."""
    rows = []
    for t in thresholds:
        right, searches = [], []
        for o in outcomes:
            searched, read = gate(o, t)
            right.append(o.right if searched or not read else o.extra["first_right"])
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
