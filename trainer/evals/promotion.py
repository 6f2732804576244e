"""Whether a newly trained adapter replaces the served default: a rule fixed in code (its text is committed in
`results/rules/default-model.md`, before any candidate is judged), applied to two `trainer eval-gate` runs on the
same dev questions: the candidate under the policy it would be served with, the current default under its own.

The candidate wins when, paired question by question (95% paired bootstrap):
- it is more accurate (the interval of the accuracy difference lies above 0) without searching more than
  `SEARCH_SLACK` more per question, or
- it searches less (the interval of the searches difference lies below 0) without being less accurate (the
  interval of the accuracy difference reaches above 0);
and in both cases its mean F1 is no more than `F1_SLACK` below the current one's. Otherwise the current one stays.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from trainer.evals.measures import TOO_FEW, paired_difference
from trainer.evals.runs import Outcome

SEARCH_SLACK = 0.05
F1_SLACK = 0.01


@dataclass(slots=True)
class Verdict:
    wins: bool
    reasons: list[str] = field(default_factory=list)
    measures: dict[str, Any] = field(default_factory=dict)


def verdict(candidate: list[Outcome], current: list[Outcome]) -> Verdict:
    """Apply the rule to the two runs' answers (one policy each, matched by question id).

    >>> def o(i, right, searches, f1=0.0):
    ...     return Outcome(f"q{i}", "nq", "neither", "auto", "a", "a", right, f1, searches, 9, 1, 0.1)
    >>> same = [o(i, i % 2 == 0, 1) for i in range(40)]
    >>> verdict(same, same).wins
    False
    >>> fewer = [o(i, i % 2 == 0, 0 if i < 20 else 1) for i in range(40)]
    >>> verdict(fewer, same).wins, verdict(fewer, same).reasons[0]
    (True, 'searches less: -0.5 [-0.65, -0.35] at no loss of accuracy: 0.0 [0.0, 0.0]')
    """
    a = {o.id: o for o in candidate}
    b = {o.id: o for o in current}
    accuracy = paired_difference({i: float(o.right) for i, o in a.items()}, {i: float(o.right) for i, o in b.items()})
    searches = paired_difference(
        {i: float(o.searches) for i, o in a.items()}, {i: float(o.searches) for i, o in b.items()}
    )
    shared = [i for i in a if i in b]
    f1 = (statistics.fmean(a[i].f1 for i in shared) if shared else 0.0,
          statistics.fmean(b[i].f1 for i in shared) if shared else 0.0)  # fmt: skip
    measures = {"questions": len(shared), "accuracy": accuracy, "searches_per_question": searches,
                "f1": {"candidate": round(f1[0], 3), "current": round(f1[1], 3)}}  # fmt: skip
    if accuracy["ci"] in (None, TOO_FEW):
        return Verdict(False, [f"too few shared questions ({len(shared)}) to judge"], measures)
    (acc_low, acc_high), (search_low, search_high) = accuracy["ci"], searches["ci"]
    acc = f"{accuracy['difference']} [{acc_low}, {acc_high}]"
    srch = f"{searches['difference']} [{search_low}, {search_high}]"
    reasons: list[str] = []
    if acc_low > 0 and searches["difference"] <= SEARCH_SLACK:
        reasons.append(f"more accurate: {acc} with searches {srch}")
    elif search_high < 0 and acc_high >= 0:
        reasons.append(f"searches less: {srch} at no loss of accuracy: {acc}")
    if not reasons:
        return Verdict(False, [f"neither more accurate ({acc}) nor searching less ({srch})"], measures)
    if f1[0] < f1[1] - F1_SLACK:
        return Verdict(False, [*reasons, f"but its F1 {f1[0]:.3f} is below the current {f1[1]:.3f}"], measures)
    return Verdict(True, reasons, measures)
