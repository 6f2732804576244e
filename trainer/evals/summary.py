"""A gate scored against the labels: over-search (known questions it searched), under-search (helped questions it did
not), AUROC where it has a score, accuracy and searches per question beside `never`, `always` and the oracle, what
each answer cost, with intervals (trainer.evals.measures); and the report (markdown table, plot)."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from sem.scoring import mc_letter
from trainer.evals.labels import Label, form_of
from trainer.evals.measures import (
    HELPED,
    KNOWN,
    MIN_COUNT,
    NEITHER,
    TOO_FEW,
    auroc,
    auroc_interval,
    auroc_within,
    fmt,
    interval,
    paired_difference,
    rate,
)
from trainer.evals.runs import Outcome
from trainer.evals.tables import figure, markdown_table


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
    first answer, the `confidence` gate's 1 - confidence; None where the gate has no score of its own. `either`
    combines two gates' decisions: its score is what it did (searched: 1, not: 0)."""
    if o.policy == "either":
        return float(o.searches > 0)
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
    lines = markdown_table(rows, cols, title).split("\n")
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
    if options:  # trainer.evals.options: what the model's likelihoods pick, whatever it writes
        named = {"letter": "likelihood of the letter after <answer>", "text": "likelihood of the option's text"}
        lines += [f"- {named[w]}: {r['predicted']}, top {r['top_share']}, accuracy {r['accuracy']}, "
                  f"majority {r['majority_baseline']}" for w, r in options.items()]  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Accuracy against searches per question, one point per policy (the oracle marks the frontier)."""
    with figure(path, title=title) as ax:
        for r in rows:
            ax.scatter(r["searches_per_question"], r["accuracy"], s=60)
            ax.annotate(r["policy"], (r["searches_per_question"], r["accuracy"]), textcoords="offset points",
                        xytext=(6, 4))  # fmt: skip
        ax.set_xlabel("searches per question")
        ax.set_ylabel("accuracy (model-labelled questions)")
        ax.grid(alpha=0.3)
