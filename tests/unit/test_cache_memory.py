"""CachedSearch over the in-process store: hits, misses, TTL, single-flight, versioned keys."""

from __future__ import annotations

import asyncio

from sem.cache import CachedSearch, LRUStore, cache_key
from sem.search.base import Passage


class CountingBackend:
    """Counts its calls; with `release`, each call waits for the test to set it (a search still in flight)."""

    name = "counting"
    version = "v1"

    def __init__(self, release: asyncio.Event | None = None) -> None:
        self.calls: list[list[str]] = []
        self.release = release

    async def search(self, queries: list[str], k: int) -> list[list[Passage]]:
        self.calls.append(list(queries))
        if self.release is not None:
            await self.release.wait()
        return [[Passage(id=f"{q}-{i}", text=f"about {q}", score=1.0 / (i + 1)) for i in range(k)] for q in queries]

    async def check_health(self) -> None: ...

    async def aclose(self) -> None: ...


async def test_miss_then_hit() -> None:
    backend = CountingBackend()
    cache = CachedSearch(backend)
    (first,) = await cache.retrieve(["hamlet author"], 2)
    (second,) = await cache.retrieve(["  hamlet   author "], 2)  # same query after normalisation
    assert not first.cached and second.cached
    assert [p.id for p in second.passages] == [p.id for p in first.passages]
    assert len(backend.calls) == 1
    assert (cache.stats.hits, cache.stats.misses) == (1, 1)


async def test_k_and_version_are_part_of_the_key() -> None:
    backend = CountingBackend()
    cache = CachedSearch(backend)
    await cache.retrieve(["q"], 2)
    (other_k,) = await cache.retrieve(["q"], 3)
    assert not other_k.cached
    key_v1 = cache_key(backend, "q", 2)
    backend.version = "v2"
    assert cache_key(backend, "q", 2) != key_v1


class Clock:
    """A monotonic clock only the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_ttl_expires() -> None:
    backend, clock = CountingBackend(), Clock()
    cache = CachedSearch(backend, LRUStore(clock=clock), ttl_s=100.0)  # each entry lives 90 to 110 s (jitter)
    await cache.retrieve(["q"], 1)
    clock.now += 89.9
    (kept,) = await cache.retrieve(["q"], 1)
    clock.now += 20.2  # 110.1 s after it was written
    (again,) = await cache.retrieve(["q"], 1)
    assert kept.cached and not again.cached and len(backend.calls) == 2


async def test_lru_evicts_oldest() -> None:
    store = LRUStore(max_entries=2)
    for key in ("a", "b", "c"):
        await store.set(key, b"x", 60)
    assert await store.get("a") is None and await store.get("c") == b"x"


async def test_single_flight_shares_one_backend_call() -> None:
    release = asyncio.Event()
    backend = CountingBackend(release)
    cache = CachedSearch(backend)
    asking = asyncio.gather(*(cache.retrieve(["same question"], 2) for _ in range(5)))
    async with asyncio.timeout(60):
        while not backend.calls:  # the search is in flight, held until the test lets it go
            await asyncio.sleep(0)
    release.set()
    results = await asking
    assert backend.calls == [["same question"]]
    assert all([p.id for p in r[0].passages] == ["same question-0", "same question-1"] for r in results)
    assert sum(r[0].cached for r in results) == 4  # four waited on the first


async def test_batch_searches_misses_in_one_call() -> None:
    backend = CountingBackend()
    cache = CachedSearch(backend)
    await cache.retrieve(["a"], 1)
    found = await cache.retrieve(["a", "b", "c", "b"], 1)
    assert [r.cached for r in found] == [True, False, False, True]  # the repeated "b" rode on the first
    assert backend.calls[-1] == ["b", "c"]


async def test_concurrent_requests_are_micro_batched() -> None:
    backend = CountingBackend()
    cache = CachedSearch(backend, batch_window_ms=20)
    found = await asyncio.gather(*(cache.retrieve([f"question {i}"], 2) for i in range(8)))
    assert all(r[0].passages for r in found)
    assert len(backend.calls) == 1 and len(backend.calls[0]) == 8  # one batch for eight requests


async def test_empty_results_get_the_short_ttl() -> None:
    class SomeEmpty(CountingBackend):
        async def search(self, queries, k):
            self.calls.append(list(queries))
            return [[] if q == "nothing" else [Passage(id=q, text=f"about {q}")] for q in queries]

    backend, clock = SomeEmpty(), Clock()
    cache = CachedSearch(backend, LRUStore(clock=clock), ttl_s=1000.0, empty_ttl_s=10.0)
    await cache.retrieve(["nothing", "something"], 1)
    clock.now += 8.9  # within both TTLs (the empty one: 9 to 11 s)
    assert [r.cached for r in await cache.retrieve(["nothing", "something"], 1)] == [True, True]
    clock.now += 2.2  # 11.1 s: past the empty result's TTL, far within the other's (900 to 1100 s)
    assert [r.cached for r in await cache.retrieve(["nothing", "something"], 1)] == [False, True]
    assert backend.calls == [["nothing", "something"], ["nothing"]]


async def test_backend_error_is_reported_not_raised() -> None:
    class Failing(CountingBackend):
        async def search(self, queries, k):
            raise ConnectionError("search host unreachable")

    cache = CachedSearch(Failing())
    (found,) = await cache.retrieve(["q"], 3)
    assert found.passages == [] and "search host unreachable" in (found.error or "")
    assert cache.stats.backend_errors == 1
