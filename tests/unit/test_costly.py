"""A search that costs what a web search API costs (issue #44): the wait's distribution, parallel queries, the bill,
and the service's spend metric."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from sem.search.bm25 import BM25Backend
from sem.search.costly import WEB_API_SPREAD, CostlyBackend, SearchCost


class Waits:
    """The injected sleep: records each wait instead of taking it."""

    def __init__(self) -> None:
        self.taken: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.taken.append(seconds)


@pytest.fixture
async def bm25(tiny_corpus: Path) -> BM25Backend:
    backend = BM25Backend(tiny_corpus)
    await backend.load()
    return backend


def test_the_spread_fits_the_published_p95_over_p50() -> None:
    published = {"brave": (250, 700), "serper": (400, 1100), "exa": (600, 1800), "tavily": (800, 2200),
                 "serpapi": (1200, 3500)}  # fmt: skip
    fitted = sorted(math.log(p95 / p50) / 1.645 for p50, p95 in published.values())
    assert fitted[2] == pytest.approx(WEB_API_SPREAD, abs=0.005)
    for p50, p95 in published.values():  # one spread, each API's median: its p95 within 10%
        assert SearchCost(p50).quantile_ms(0.95) == pytest.approx(p95, rel=0.10)


async def test_calls_wait_log_normal_times_and_bill_per_query(bm25: BM25Backend) -> None:
    waits = Waits()
    costly = CostlyBackend(bm25, SearchCost(300, price_per_1000=5.0), seed=1, sleep=waits)
    for _ in range(2000):
        (found,) = await costly.search(["who wrote Hamlet"], 1)
        assert found[0].id == "hamlet"  # the inner backend's answer, unchanged
    ms = sorted(1000 * w for w in waits.taken)
    assert statistics.median(ms) == pytest.approx(300, rel=0.06)
    assert ms[int(0.95 * len(ms))] == pytest.approx(SearchCost(300).quantile_ms(0.95), rel=0.12)
    assert costly.calls == costly.queries == 2000 and costly.spend == pytest.approx(10.0)
    assert costly.waited_s == pytest.approx(sum(waits.taken))
    assert (costly.name, costly.version, costly.modes, len(costly)) == (bm25.name, bm25.version, (), len(bm25))


async def test_a_batch_waits_its_slowest_query_and_pays_for_each(bm25: BM25Backend) -> None:
    single, batched = Waits(), Waits()
    one = CostlyBackend(bm25, SearchCost(300, price_per_1000=2.0), seed=3, sleep=single)
    four = CostlyBackend(bm25, SearchCost(300, price_per_1000=2.0), seed=3, sleep=batched)
    for _ in range(500):
        await one.search(["Hamlet"], 1)
        await four.search(["Hamlet", "Paris", "Kyoto", "Mars"], 1)
    assert statistics.median(batched.taken) > 1.5 * statistics.median(single.taken)  # the max of four draws
    assert four.spend == pytest.approx(4 * one.spend) and four.queries == 2000 and four.calls == 500
    free = CostlyBackend(bm25, SearchCost(0), sleep=single)
    await free.search(["Hamlet"], 1)
    assert single.taken[-1] == 0.0 and free.spend == 0.0


async def test_the_setting_wraps_any_backend_and_is_off_by_default(settings, tiny_corpus: Path) -> None:
    from sem.search import build_backend

    plain = await build_backend(settings.model_copy(update={"corpus": tiny_corpus}))
    assert not isinstance(plain, CostlyBackend)
    search = settings.search.model_copy(update={"simulated_latency_ms": 1.0, "price_per_1000": 3.0})
    costly = await build_backend(settings.model_copy(update={"corpus": tiny_corpus, "search": search}))
    assert isinstance(costly, CostlyBackend) and costly.cost == SearchCost(1.0, WEB_API_SPREAD, 3.0)
    (found,) = await costly.search(["capital of France"], 1)
    assert found[0].id == "paris" and costly.spend == pytest.approx(0.003)


def test_the_service_counts_search_time_and_spend() -> None:
    from service.metrics import Metrics

    metrics = Metrics(cache_stats=lambda: (0, 0), ready=lambda: True, price_per_1000=5.0)
    metrics.observe_backend("bm25", 0.25, 3, False)
    metrics.observe_backend("bm25", 0.5, 1, True)
    stats = metrics.summary()
    assert stats["search_seconds"] == pytest.approx(0.75) and stats["search_spend"] == pytest.approx(0.02)
