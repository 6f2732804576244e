"""Search-efficiency rewards, as plain picklable callables over the rollout's trace fields.

TRL calls each with `(prompts, completions, **columns)`; the columns hold the dataset's fields (`answers`,
`source`, `choices`) and the rollout's (`trace_answers`, `search_count`, `follows_template`). Each returns one float
per completion.

- `sem`: PAPER.md's SEM reward: f * (1[F1(a1) >= tau, no search] F1(a1) + 1[F1(a1) < tau, valid search] F1(a2)).
- `ikea`: correct = 1 + bonus (0.6 / 0.4 / 0.2 / 0 for 0 / 1 / 2 / 3+ searches); wrong = 0.05 if it searched, else 0;
  bad format = -1.
- `otc`: a base reward times sin(f(m, n) pi / 2n), f(m, n) = 2nm / (m + n), m = the completion's searches,
  n = the fewest searches among its group's correct completions.
- `em`: exact match of the final answer only (Search-R1's, the always-search baseline).
Zero-weight metrics (`searches`, `format`, `answer_f1`) log what the policy does without shaping it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from sem.scoring import em_score, score

IKEA_BONUS = (0.6, 0.4, 0.2)


def _column(kwargs: dict[str, Any], name: str, n: int, default: Any = None) -> list[Any]:
    values = kwargs.get(name)
    if values is None:
        if default is None:
            raise ValueError(f"reward needs the column {name!r} (from the dataset or the rollout)")
        return [default] * n
    return list(values)


def _rows(completions: list[Any], kwargs: dict[str, Any]) -> Iterator[tuple[Any, list[str], int, bool, str, Any]]:
    """Per completion: gold answers, the trace's answers, searches, template conformity, source, choices."""
    n = len(completions)
    yield from zip(
        _column(kwargs, "answers", n),
        _column(kwargs, "trace_answers", n),
        _column(kwargs, "search_count", n),
        _column(kwargs, "follows_template", n),
        _column(kwargs, "source", n, ""),
        kwargs.get("choices") or [None] * n,
        strict=True,
    )


def _score(answer: str | None, golds: Sequence[str], source: str, choices: Sequence[str] | None) -> float:
    return 0.0 if answer is None else score(answer, golds, source=source or "", choices=choices)


class SEMReward:
    """The SEM reward with confidence threshold `tau` on the first answer's score.

    >>> r = SEMReward(tau=0.5)
    >>> r(["c"] * 3, answers=[["Paris"]] * 3, trace_answers=[["Paris"], ["Rome", "Paris"], ["Paris", "Paris"]],
    ...   search_count=[0, 1, 1], follows_template=[True, True, True], source=["nq_open"] * 3)
    [1.0, 1.0, 0.0]
    """

    def __init__(self, tau: float = 0.8) -> None:
        self.tau = tau
        self.__name__ = "sem"

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float]:
        rewards = []
        for gold, seq, m, ok, src, ch in _rows(completions, kwargs):
            if not ok or not seq:
                rewards.append(0.0)
                continue
            first = _score(seq[0], gold, src, ch)
            if first >= self.tau:
                rewards.append(first if m == 0 else 0.0)  # a redundant search earns nothing
            else:
                valid = m > 0 and len(seq) > 1
                rewards.append(_score(seq[-1], gold, src, ch) if valid else 0.0)
        return rewards


class IKEAReward:
    """IKEA's reward: correctness plus a bonus for fewer searches, a small consolation for searching."""

    def __init__(self, tau: float = 0.8) -> None:
        self.tau = tau
        self.__name__ = "ikea"

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float]:
        rewards = []
        for gold, seq, m, ok, src, ch in _rows(completions, kwargs):
            if not ok or not seq:
                rewards.append(-1.0)
            elif _score(seq[-1], gold, src, ch) >= self.tau:
                rewards.append(1.0 + (IKEA_BONUS[m] if m < len(IKEA_BONUS) else 0.0))
            else:
                rewards.append(0.05 if m > 0 else 0.0)
        return rewards


class EMReward:
    """Exact match of the final answer (format and searches ignored): Search-R1's outcome reward."""

    __name__ = "em"

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float]:
        n = len(completions)
        golds = _column(kwargs, "answers", n)
        answers = _column(kwargs, "trace_answers", n)
        sources = _column(kwargs, "source", n, "")
        choices = kwargs.get("choices") or [None] * n
        return [
            em_score(seq[-1], gold, source=src or "", choices=ch) if seq else 0.0
            for gold, seq, src, ch in zip(golds, answers, sources, choices, strict=True)
        ]


def otc_coefficient(m: int, n: int | None) -> float:
    """OTC's tool-efficiency factor for m searches when the group's best correct answer took n.

    >>> otc_coefficient(2, 2), round(otc_coefficient(4, 2), 3), otc_coefficient(0, 2), otc_coefficient(0, 0)
    (1.0, 0.866, 0.0, 1.0)
    """
    if n is None:
        return 1.0  # no correct completion in the group: nothing to compare with
    if n == 0:
        return math.cos(m * math.pi / (2 * m + 1))  # OTC's case for tasks solvable without tools
    f = 2 * n * m / (m + n)
    return math.sin(f * math.pi / (2 * n))


class OTCReward:
    """A base reward (its correctness decides "correct") times OTC's coefficient, groups = runs of equal prompts."""

    def __init__(self, base: Callable[..., list[float]] | None = None, threshold: float = 0.5) -> None:
        self.base = base or EMReward()
        self.threshold = threshold
        self.__name__ = "otc"

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float]:
        n = len(completions)
        base = self.base(completions, **kwargs)
        searches = _column(kwargs, "search_count", n)
        prompts = kwargs.get("prompts") or list(range(n))  # without prompts each completion is its own group
        rewards = [0.0] * n
        start = 0
        while start < n:
            end = start
            while end < n and prompts[end] == prompts[start]:
                end += 1
            correct = [searches[i] for i in range(start, end) if base[i] >= self.threshold]
            best = min(correct) if correct else None
            for i in range(start, end):
                rewards[i] = base[i] * otc_coefficient(searches[i], best)
            start = end
        return rewards


class Metric:
    """A zero-weight "reward" that only logs a per-completion quantity (TRL logs every reward's mean)."""

    def __init__(self, name: str) -> None:
        self.__name__ = name

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float]:
        n = len(completions)
        if self.__name__ == "searches":
            return [float(m) for m in _column(kwargs, "search_count", n)]
        if self.__name__ == "format":
            return [float(ok) for ok in _column(kwargs, "follows_template", n)]
        golds = _column(kwargs, "answers", n)
        answers = _column(kwargs, "trace_answers", n)
        sources = _column(kwargs, "source", n, "")
        choices = kwargs.get("choices") or [None] * n
        return [
            _score(seq[-1] if seq else None, gold, src, ch)
            for gold, seq, src, ch in zip(golds, answers, sources, choices, strict=True)
        ]


REWARDS: dict[str, Callable[..., Callable[..., list[float]]]] = {
    "sem": SEMReward,
    "ikea": IKEAReward,
    "otc": OTCReward,
    "em": EMReward,
}
METRICS = ("searches", "format", "answer_f1")


def get_reward(name: str, **params: Any) -> Callable[..., list[float]]:
    """A reward by name (`sem`, `ikea`, `otc`, `em`) or by dotted path `package.module:callable`."""
    if name in REWARDS:
        return REWARDS[name](**params)
    if ":" in name:
        import importlib

        module, _, attr = name.partition(":")
        return getattr(importlib.import_module(module), attr)
    raise ValueError(f"unknown reward {name!r}; choose one of {sorted(REWARDS)} or give module:callable")


def reward_functions(name: str, **params: Any) -> tuple[list[Callable[..., list[float]]], list[float]]:
    """The reward to train on plus the zero-weight metrics, with their weights."""
    funcs = [get_reward(name, **params), *(Metric(m) for m in METRICS)]
    return funcs, [1.0] + [0.0] * len(METRICS)
