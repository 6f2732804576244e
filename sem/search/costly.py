"""A search that costs what a web search API costs: time and money per call, around any backend (issue #44).

Local BM25 answers in a millisecond, so a benchmark on it shows deciding only ever costing (the first answer's
tokens) and never paying. `CostlyBackend` makes each call wait as a web search API does and counts what it would
bill: a benchmark tool (`SEM_SEARCH__SIMULATED_LATENCY_MS`, `SEM_SEARCH__PRICE_PER_1000`), never on by default.

The wait is log-normal: a median you choose and a spread fitted to published p50/p95 latencies of five web search
APIs (scavio.dev's 2026 table: Brave 250/700 ms, Serper 400/1,100, Exa 600/1,800, Tavily 800/2,200, SerpAPI
1,200/3,500). For a log-normal, p95/p50 = exp(1.645 sigma); those five give sigma 0.61 to 0.67, median 0.63, so
one spread serves every median. A batched call runs its queries in parallel, as a client fires them: it waits the
longest of their draws and pays for each.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sem.search.base import SearchBackend, search_modes
from sem.types import Passage

# ln(p95/p50)/1.645 for the five APIs above: 0.626, 0.615, 0.668, 0.615, 0.651; their median.
WEB_API_SPREAD = 0.63


@dataclass(frozen=True, slots=True)
class SearchCost:
    """What one query costs: a log-normal wait (`median_ms`, `spread` = sigma of its log) and a price."""

    median_ms: float
    spread: float = WEB_API_SPREAD
    price_per_1000: float = 0.0  # currency units per 1,000 queries

    def quantile_ms(self, q: float) -> float:
        """The wait's q-quantile (for documentation and tests): p50 is the median, p95 = median x exp(1.645 spread).

        >>> round(SearchCost(400).quantile_ms(0.95))
        1127
        """
        from statistics import NormalDist

        return self.median_ms * math.exp(self.spread * NormalDist().inv_cdf(q))


class CostlyBackend:
    """`inner`, answering after the wait a web API would take, with what it would bill counted (`calls`, `queries`,
    `waited_s`, `spend`). Its name and version are the inner backend's: the results are the same, so are cache keys."""

    def __init__(self, inner: SearchBackend, cost: SearchCost, *, seed: int | None = None,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:  # fmt: skip
        self.inner = inner
        self.cost = cost
        self.name = inner.name
        self.version = inner.version
        self.modes = search_modes(inner)
        self.domain_filters = False  # `search` takes no filter to pass on: what it returns is filtered after
        self._rng = random.Random(seed)
        self._sleep = sleep  # injected: tests count the waits without taking them
        self.calls = 0
        self.queries = 0
        self.waited_s = 0.0
        self.spend = 0.0

    def draw_s(self, n: int) -> float:
        """The wait of one call of `n` queries fired together: the longest of n draws (0 for none)."""
        if n <= 0 or self.cost.median_ms <= 0:
            return 0.0
        mu = math.log(self.cost.median_ms / 1000)
        return max(self._rng.lognormvariate(mu, self.cost.spread) for _ in range(n))

    async def search(self, queries: list[str], k: int, *, mode: str | None = None) -> list[list[Passage]]:
        wait = self.draw_s(len(queries))
        self.calls += 1
        self.queries += len(queries)
        self.waited_s += wait
        self.spend += len(queries) * self.cost.price_per_1000 / 1000
        await self._sleep(wait)
        if mode is None:
            return await self.inner.search(queries, k)
        return await self.inner.search(queries, k, mode=mode)

    async def check_health(self) -> None:
        await self.inner.check_health()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name: str) -> Any:  # the rest is the inner backend's (a local index's corpus, its size)
        return getattr(self.inner, name)

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]
