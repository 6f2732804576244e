"""The search-rate dial (issue #44): search the share of questions the model is least sure of.

A deployment (or a request) asks for a rate, say 0.3; the `confidence` gate then searches when the first answer's
confidence is below the 0.3-quantile of the model's recent confidences, so about 30% of questions are searched and
they are the least sure 30%, not the first 30% a budget would take. The quantile is read from a window of the last
`size` confidences of answers the service gave (any rate, per request, from one window), kept in Redis when there is
one, so replicas share it (LPUSH + LTRIM in one transaction), else in the process. Until the window holds
`warmup` confidences the threshold is the model's calibrated one (`trainer calibrate`).

With a search budget, the rate asked is also held to what the budget's window has left: at most `left` searches
over the questions expected before it turns over (the window's arrival rate over the last minute, times the seconds
left), so the budget is spread over the window instead of spent on its first questions.

A failing Redis degrades to the process's own window, with a warning; it never fails an answer.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)
ABOVE_ALL = 1.01  # a threshold every confidence (a probability) is below: rate 1 searches everything
ARRIVALS_S = 60.0  # the arrival rate is read over this much of the window's recent past


def rate_threshold(confidences: list[float], rate: float) -> float:
    """The threshold below which `rate` of these confidences fall: the k-th smallest, k = round(rate x n).

    >>> rate_threshold([0.9, 0.1, 0.5, 0.7], 0.5), rate_threshold([0.9, 0.1, 0.5, 0.7], 0.0)
    (0.7, 0.1)
    >>> rate_threshold([0.9, 0.1], 1.0)
    1.01
    """
    ranked = sorted(confidences)
    k = round(rate * len(ranked))
    return ranked[k] if k < len(ranked) else ABOVE_ALL


def spread_rate(rate: float, left: int, reset_s: float, per_second: float) -> float:
    """The rate to search at so that `left` searches last the `reset_s` seconds left of a budget's window, at
    `per_second` questions a second: the rate asked, or less.

    >>> spread_rate(0.5, left=30, reset_s=100, per_second=1.0), spread_rate(0.2, 30, 100, 1.0)
    (0.3, 0.2)
    >>> spread_rate(0.5, left=0, reset_s=100, per_second=1.0), spread_rate(0.5, 30, 100, 0.0)
    (0.0, 0.5)
    """
    expected = per_second * reset_s
    return rate if expected <= 0 else min(rate, left / expected)


class SearchRateDial:
    """The window of recent confidences, per model, and the threshold that searches a given share of them."""

    def __init__(self, model: str, calibrated: float, *, redis_url: str | None = None, size: int = 500,
                 warmup: int = 30, clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.calibrated = calibrated
        self.clock = clock  # wall time: replicas stamp one shared window
        self.size = size
        self.warmup = warmup
        self.key = f"sem:rate:{model}"
        self._local: deque[tuple[float, float]] = deque(maxlen=size)  # (when, confidence)
        self._redis: Any = None
        self.redis_errors = 0
        if redis_url:
            import redis.asyncio as redis

            self._redis = redis.from_url(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)

    async def recent(self) -> list[tuple[float, float]]:
        """The window as (when, confidence), newest first: shared through Redis, else (or while Redis fails) this
        process's."""
        if self._redis is not None:
            try:
                raw = await self._redis.lrange(self.key, 0, self.size - 1)
                return [(float(when), float(c)) for when, c in (item.split(b" ") for item in raw)]
            except Exception as exc:  # Redis down: this process's own window
                self._note_redis_error(exc)
        return list(reversed(self._local))

    async def observe(self, confidence: float) -> None:
        """One answer's first-answer confidence into the window."""
        now = self.clock()
        self._local.append((now, confidence))
        if self._redis is None:
            return
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                await pipe.lpush(self.key, f"{now!r} {confidence!r}").ltrim(self.key, 0, self.size - 1).execute()
        except Exception as exc:
            self._note_redis_error(exc)

    async def threshold(self, rate: float, *, left: int | None = None, reset_s: float | None = None) -> float:
        """The confidence threshold that searches about `rate` of questions (held to a budget's `left` searches over
        the `reset_s` seconds left of its window, when given): the window's quantile once it holds `warmup`
        confidences, the calibrated threshold before."""
        return (await self.plan(rate, left=left, reset_s=reset_s))[1]

    async def plan(self, rate: float, *, left: int | None = None, reset_s: float | None = None) -> tuple[float, float]:
        """The rate searched at (the rate asked, or less under a budget) and its threshold."""
        window = await self.recent()
        if left is not None and reset_s is not None:
            since = self.clock() - ARRIVALS_S
            arrivals = sum(when >= since for when, _ in window)
            span = min(ARRIVALS_S, self.clock() - window[-1][0]) if window else 0.0  # what the window has seen
            rate = spread_rate(rate, left, reset_s, arrivals / span if span > 0 else 0.0)
        if len(window) < self.warmup:
            return rate, self.calibrated
        return rate, rate_threshold([c for _, c in window], rate)

    def _note_redis_error(self, exc: Exception) -> None:
        self.redis_errors += 1
        if self.redis_errors == 1 or self.redis_errors % 100 == 0:
            log.warning("the search-rate window falls back to this process's: Redis %s", type(exc).__name__)

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
