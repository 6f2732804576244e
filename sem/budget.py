"""Search budgets across requests: how many searches an API key, and the whole deployment, may run per window.

Windows are fixed and in UTC: the minute, the day, the calendar month; each window's count lives under a key named by
the window's start, so a new window starts from zero and the old key expires. A check-and-spend is one Lua script
(redis-py's `register_script`): it reads every counter that applies (the key's and the deployment's, each window),
and spends on all of them only when all have room, so replicas sharing one Redis never spend past a budget. All the
counters share one hash tag (one Redis Cluster slot), as a script's keys must.

Without Redis (or while it is unreachable) the counts are kept in this process: correct for one replica, and said
so at start-up. A search served from the cache is free unless `count_cache_hits` (it costs nothing at the provider);
either way it is counted apart (`Allowance.hits`, the service's metrics).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sem.errors import SearchBudgetExhausted
from sem.settings import BudgetSettings, Window

log = logging.getLogger(__name__)
PREFIX = "sem:budget:{sem-budget}"  # one hash tag: the script's keys must share a Cluster slot
KEY_LIMITS = PREFIX + ":key-limits"  # Redis hash: principal -> {window: searches} (`sem keys budget`)
DEPLOYMENT = "deployment"

# KEYS[i]: counter i. ARGV[1]: searches to spend (0: only read). ARGV[1+i]: limit i. ARGV[1+#KEYS+i]: ttl i (s).
# Returns {1 if spent else 0, count_1, ..., count_n}: the counts after spending, or as they were when refused.
SPEND_LUA = """
local n = tonumber(ARGV[1])
local counts = {}
local room = 1
for i = 1, #KEYS do
  counts[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  if counts[i] + n > tonumber(ARGV[1 + i]) then room = 0 end
end
if room == 1 and n > 0 then
  for i = 1, #KEYS do
    counts[i] = redis.call('INCRBY', KEYS[i], n)
    if counts[i] == n then redis.call('EXPIRE', KEYS[i], ARGV[1 + #KEYS + i]) end
  end
end
table.insert(counts, 1, room)
return counts
"""


def window_bounds(window: Window, now: float) -> tuple[str, float]:
    """The window holding `now`: its id (its start) and the seconds until the next one starts.

    >>> window_bounds(Window.minute, 90.5)
    ('60', 29.5)
    >>> window_bounds(Window.month, datetime(2026, 12, 31, 23, 0, tzinfo=UTC).timestamp())
    ('2026-12', 3600.0)
    """
    if window is Window.minute or window is Window.day:
        span = 60 if window is Window.minute else 86_400
        start = math.floor(now / span) * span
        return str(start), start + span - now
    at = datetime.fromtimestamp(now, UTC)
    following = datetime(at.year + at.month // 12, at.month % 12 + 1, 1, tzinfo=UTC)
    return f"{at.year:04d}-{at.month:02d}", following.timestamp() - now


@dataclass(frozen=True, slots=True)
class Limit:
    scope: str  # "deployment", or the principal ("key:<digest prefix>", "ip:<address>")
    window: Window
    searches: int


@dataclass(frozen=True, slots=True)
class Standing:
    """One limit's count in the current window."""

    limit: Limit
    spent: int
    reset_s: float

    @property
    def left(self) -> int:
        return max(0, self.limit.searches - self.spent)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a check or a spend found: whether it spent, and every limit's standing."""

    spent: bool
    standings: tuple[Standing, ...]
    asked: int = 0  # searches it tried to spend (0: a check)

    @property
    def tightest(self) -> Standing | None:
        """The limit with the fewest searches left (the sooner reset among equals)."""
        return min(self.standings, key=lambda s: (s.left, s.reset_s), default=None)

    @property
    def left(self) -> int | None:
        tightest = self.tightest
        return tightest.left if tightest else None

    @property
    def reset_s(self) -> float | None:
        """When the exhausted limits have all reset (else when the tightest does)."""
        done = [s.reset_s for s in self.standings if s.left == 0]
        if done:
            return max(done)
        tightest = self.tightest
        return tightest.reset_s if tightest else None

    @property
    def exhausted(self) -> bool:
        return any(s.left == 0 for s in self.standings)

    def describe(self) -> str:
        gone = [s for s in self.standings if s.left == 0] or list(self.standings)
        what = ", ".join(
            f"{'the deployment' if s.limit.scope == DEPLOYMENT else 'this key'}'s {s.limit.searches} per "
            f"{s.limit.window.value}"
            for s in gone
        )
        return f"the search budget is spent ({what}); it resets in {math.ceil(self.reset_s or 0)} s"


class _LocalCounters:
    """The counts in this process: what one replica without Redis has (and the fallback while Redis is down)."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[float, int]] = {}  # key -> (expires at, count)

    def spend(self, keys: list[str], limits: list[int], ttls: list[float], n: int, now: float) -> list[int]:
        counts = []
        for key in keys:
            expires, count = self._counts.get(key, (0.0, 0))
            counts.append(count if expires > now else 0)
        room = all(c + n <= limit for c, limit in zip(counts, limits, strict=True))
        if room and n > 0:
            for i, (key, ttl) in enumerate(zip(keys, ttls, strict=True)):
                counts[i] += n
                expires = self._counts[key][0] if counts[i] > n else now + ttl
                self._counts[key] = (expires, counts[i])
            if len(self._counts) > 50_000:  # many principals: forget the windows that are over
                self._counts = {k: v for k, v in self._counts.items() if v[0] > now}
        return [int(room), *counts]


class SearchBudget:
    """The budgets of one deployment. `check` reads, `spend` checks and spends atomically; `allowance` gives one
    request's view for the search loop.

    Args:
        settings: the limits (`SEM_BUDGET__*`).
        redis_url: the shared counts; None: counted in this process.
        clock: seconds since the epoch (tests move it to cross a window).
        observer: told every verdict (the service's metrics); `on_hit`: told every cache hit.
        timeout_s: Redis calls slower than this count in process instead (longer than the cache's 0.5 s: a budget
            counted apart by a replica may overspend, so it waits longer before it does).
    """

    def __init__(
        self,
        settings: BudgetSettings,
        redis_url: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
        observer: Callable[[Verdict], None] | None = None,
        timeout_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.observer = observer
        self.on_hit: Callable[[], None] | None = None
        self._local = _LocalCounters()
        self._redis: Any = None
        self._script: Any = None
        self._key_limits: dict[str, tuple[float, dict[Window, int] | None]] = {}  # principal -> (read at, limits)
        self.redis_errors = 0  # calls that fell back to in-process counts
        if not settings.enabled:
            return
        if redis_url:
            import redis.asyncio as redis

            self._redis = redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
            self._script = self._redis.register_script(SPEND_LUA)
        else:
            log.warning("search budgets are counted in this process only (no SEM_REDIS_URL): replicas do not share "
                        "them, and a restart starts them again from zero")  # fmt: skip

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    @property
    def store(self) -> str:
        return "redis" if self._redis is not None else "memory"

    async def limits(self, principal: str) -> list[Limit]:
        """The deployment's limits and this principal's (its own from Redis or settings, else `per_key`)."""
        own = await self._own_limits(principal)
        per = own if own is not None else self.settings.per_key
        return [Limit(DEPLOYMENT, w, n) for w, n in self.settings.deployment.items()] + [
            Limit(principal, w, n) for w, n in per.items()
        ]

    async def _own_limits(self, principal: str) -> dict[Window, int] | None:
        from sem.keys import principal_of

        for digest, limits in self.settings.keys.items():
            if principal_of(digest) == principal:
                found: dict[Window, int] | None = limits
                break
        else:
            found = None
        if self._redis is None:
            return found
        now = time.monotonic()
        cached = self._key_limits.get(principal)
        if cached is not None and now - cached[0] < 5.0:  # read at most every 5 s: `sem keys budget` applies soon
            return cached[1] if cached[1] is not None else found
        try:
            raw = await self._redis.hget(KEY_LIMITS, principal)
        except Exception as exc:  # Redis down: the settings' limits
            self._note_redis_error(exc)
            return found
        stored = {Window(w): int(n) for w, n in json.loads(raw).items()} if raw else None
        if len(self._key_limits) > 10_000:
            self._key_limits.clear()
        self._key_limits[principal] = (now, stored)
        return stored if stored is not None else found

    async def check(self, principal: str) -> Verdict:
        """The standings, spending nothing."""
        return await self._run(principal, 0)

    async def spend(self, principal: str, searches: int = 1) -> Verdict:
        """Spend `searches` on every limit that applies if all have room (`Verdict.spent`), else nothing."""
        return await self._run(principal, searches)

    async def _run(self, principal: str, n: int) -> Verdict:
        limits = await self.limits(principal)
        if not limits:
            return Verdict(n > 0, (), n)
        now = self.clock()
        bounds = [window_bounds(limit.window, now) for limit in limits]
        keys = [f"{PREFIX}:{lim.scope}:{lim.window.value}:{wid}" for lim, (wid, _) in zip(limits, bounds, strict=True)]
        caps = [limit.searches for limit in limits]
        ttls = [math.ceil(reset) + 60 for _, reset in bounds]  # the key outlives its window a little
        result = None
        if self._script is not None:
            try:
                result = [int(x) for x in await self._script(keys=keys, args=[n, *caps, *ttls])]
            except Exception as exc:  # Redis down: count here rather than fail or stop searching
                self._note_redis_error(exc)
        if result is None:
            result = self._local.spend(keys, caps, ttls, n, now)
        room, counts = bool(result[0]), result[1:]
        standings = tuple(
            Standing(limit, count, reset) for limit, count, (_, reset) in zip(limits, counts, bounds, strict=True)
        )
        verdict = Verdict(room and n > 0, standings, n)
        if self.observer is not None:
            self.observer(verdict)
        return verdict

    def _note_redis_error(self, exc: Exception) -> None:
        self.redis_errors += 1
        if self.redis_errors == 1 or self.redis_errors % 100 == 0:
            log.warning("search budgets fall back to in-process counts: Redis %s", type(exc).__name__)

    def allowance(self, principal: str, *, strict: bool = False, verdict: Verdict | None = None) -> Allowance:
        return Allowance(self, principal, strict=strict, last=verdict)

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()


@dataclass(slots=True)
class Allowance:
    """One request's view of the budget, handed to the search cache: `take` is asked before each search.

    `strict` (the `always` policy): an exhausted budget raises SearchBudgetExhausted (a 429) instead of refusing.
    """

    budget: SearchBudget
    principal: str
    strict: bool = False
    last: Verdict | None = None  # the latest standings, for the response's headers
    exhausted: bool = False
    hits: int = 0
    spent: int = 0

    async def take(self, *, cached: bool) -> bool:
        """Whether this search may run; spends on the budget unless it is a free cache hit."""
        if cached:
            self.hits += 1
            if self.budget.on_hit is not None:
                self.budget.on_hit()
            if not self.budget.settings.count_cache_hits:
                return True
        verdict = await self.budget.spend(self.principal)
        self.last = verdict
        if verdict.spent:
            self.spent += 1
            return True
        self.exhausted = True
        if self.strict:
            raise SearchBudgetExhausted(verdict.describe(), retry_after_s=math.ceil(verdict.reset_s or 1))
        return False
