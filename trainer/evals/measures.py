"""The measures a search gate is reported with (../shared/EVALUATION.md), with their uncertainty.

Every rate comes with the count it stands on and a 95% bootstrap interval, except where the count is under
`MIN_COUNT`: there the interval says "too few" (12 known questions say little alone; 4 say nothing). AUROC is
bootstrapped over questions like the rest, and two gates run on the same questions are compared by a paired
bootstrap of their difference, which is much narrower than two separate intervals side by side.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, TypeVar

KNOWN, HELPED, NEITHER = "known", "helped", "neither"
MIN_COUNT = 10  # below this many questions a rate is reported with "too few", never an interval
RESAMPLES = 1000
TOO_FEW = "too few"
T = TypeVar("T")


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


def auroc(scores: Sequence[float], positives: Sequence[bool]) -> float | None:
    """Probability that a random positive scores above a random negative (ties count half); None without both.

    >>> auroc([0.9, 0.8, 0.1, 0.3], [True, True, False, False])
    1.0
    >>> auroc([0.5, 0.5], [True, False])
    0.5
    """
    return auroc_within(scores, positives, [""] * len(scores))


def _percentiles(stats: list[float]) -> tuple[float, float]:
    stats.sort()
    n = len(stats)
    return round(stats[int(0.025 * n)], 3), round(stats[max(0, int(0.975 * n) - 1)], 3)


def bootstrap(
    items: Sequence[T], statistic: Callable[[Sequence[T]], float | None], *, seed: int = 0, n: int = RESAMPLES
) -> tuple[float, float] | None:
    """95% percentile interval of `statistic` over `n` resamples of `items` (questions, drawn with replacement);
    resamples where the statistic is undefined (an AUROC without both classes) are skipped. None without data."""
    if not items:
        return None
    rng = random.Random(seed)
    stats = [s for _ in range(n) if (s := statistic(rng.choices(items, k=len(items)))) is not None]
    return _percentiles(stats) if stats else None


def bootstrap_ci(values: Sequence[float], n: int = RESAMPLES, seed: int = 0) -> tuple[float, float] | None:
    """95% bootstrap interval of the mean.

    >>> bootstrap_ci([1.0] * 20)
    (1.0, 1.0)
    """
    return bootstrap(values, statistics.fmean, seed=seed, n=n)


def interval(values: Sequence[float], *, seed: int = 0) -> tuple[float, float] | str | None:
    """The mean's bootstrap interval, or "too few" under `MIN_COUNT` values (None without any).

    >>> interval([1.0, 0.0] * 3)
    'too few'
    >>> interval([1.0, 0.0] * 10)
    (0.3, 0.75)
    """
    if not values:
        return None
    return bootstrap_ci(values, seed=seed) if len(values) >= MIN_COUNT else TOO_FEW


def rate(flags: Sequence[bool], *, seed: int = 0) -> dict[str, Any]:
    """A share with its count and interval: {"value", "n", "ci"} ("too few" under `MIN_COUNT`).

    >>> rate([True, False, False, False])
    {'value': 0.25, 'n': 4, 'ci': 'too few'}
    """
    values = [float(f) for f in flags]
    return {"value": round(statistics.fmean(values), 3) if values else None, "n": len(values),
            "ci": interval(values, seed=seed)}  # fmt: skip


def auroc_interval(
    scores: Sequence[float], positives: Sequence[bool], groups: Sequence[str] | None = None, *, seed: int = 0
) -> tuple[float, float] | str | None:
    """AUROC's bootstrap interval over questions (within `groups` when given); "too few" when either class has
    fewer than `MIN_COUNT` members."""
    rows = list(zip(scores, positives, groups or [""] * len(scores), strict=True))
    pos = sum(p for _, p, _ in rows)
    if not pos or pos == len(rows):
        return None
    if min(pos, len(rows) - pos) < MIN_COUNT:
        return TOO_FEW

    def stat(sample: Sequence[tuple[float, bool, str]]) -> float | None:
        s, p, g = zip(*sample, strict=True)
        return auroc_within(s, p, g)

    return bootstrap(rows, stat, seed=seed)


def paired_difference(a: Mapping[Hashable, float], b: Mapping[Hashable, float], *, seed: int = 0) -> dict[str, Any]:
    """Mean of a - b over the questions both were run on, with a paired bootstrap interval (questions resampled
    together, so what the two gates share cancels out). "too few" under `MIN_COUNT` shared questions.

    >>> d = paired_difference({i: 1.0 for i in range(20)}, {i: float(i % 2) for i in range(20)})
    >>> d["difference"], d["n"], d["ci"]
    (0.5, 20, (0.3, 0.75))
    """
    shared = [k for k in a if k in b]
    diffs = [a[k] - b[k] for k in shared]
    return {"difference": round(statistics.fmean(diffs), 3) if diffs else None, "n": len(diffs),
            "ci": interval(diffs, seed=seed)}  # fmt: skip


def fmt(value: Any) -> str:
    """A measure for a markdown table: rounded numbers, intervals as [lo, hi].

    >>> fmt(0.12345), fmt((0.1, 0.2)), fmt(None), fmt("too few")
    ('0.123', '[0.1, 0.2]', '-', 'too few')
    """
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else f"{value:.1f}"
    if isinstance(value, tuple | list) and len(value) == 2:
        return f"[{value[0]}, {value[1]}]"
    return str(value)
