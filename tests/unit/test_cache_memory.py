"""CachedSearch over the in-process store: hits, misses, TTL, single-flight, versioned keys."""

from __future__ import annotations

import asyncio

from sem.cache import CachedSearch, LRUStore, cache_key
from sem.search.base import Passage


class CountingBackend:
    name = "counting"
    version = "v1"

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[list[str]] = []
        self.delay = delay

    async def search(self, queries: list[str], k: int) -> list[list[Passage]]:
        self.calls.append(list(queries))
        await asyncio.sleep(self.delay)
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


async def test_ttl_expires() -> None:
    backend = CountingBackend()
    cache = CachedSearch(backend, LRUStore(), ttl_s=0.0)
    await cache.retrieve(["q"], 1)
    (again,) = await cache.retrieve(["q"], 1)
    assert not again.cached and len(backend.calls) == 2


async def test_lru_evicts_oldest() -> None:
    store = LRUStore(max_entries=2)
    for key in ("a", "b", "c"):
        await store.set(key, b"x", 60)
    assert await store.get("a") is None and await store.get("c") == b"x"


async def test_single_flight_shares_one_backend_call() -> None:
    backend = CountingBackend(delay=0.2)
    cache = CachedSearch(backend)
    results = await asyncio.gather(*(cache.retrieve(["same question"], 2) for _ in range(5)))
    assert len(backend.calls) == 1
    assert all(r[0].passages for r in results)
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
    class Empty(CountingBackend):
        async def search(self, queries, k):
            self.calls.append(list(queries))
            return [[] for _ in queries]

    backend = Empty()
    cache = CachedSearch(backend, empty_ttl_s=0.0)
    await cache.retrieve(["nothing"], 1)
    (again,) = await cache.retrieve(["nothing"], 1)
    assert not again.cached and len(backend.calls) == 2


async def test_backend_error_is_reported_not_raised() -> None:
    class Failing(CountingBackend):
        async def search(self, queries, k):
            raise ConnectionError("search host unreachable")

    cache = CachedSearch(Failing())
    (found,) = await cache.retrieve(["q"], 3)
    assert found.passages == [] and "search host unreachable" in (found.error or "")
    assert cache.stats.backend_errors == 1
