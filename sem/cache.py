"""Search-result cache: Redis when configured (shared by replicas), an in-process LRU otherwise.

`CachedSearch` wraps a backend. Keys are versioned by backend name and version (the corpus hash for bm25),
so a rebuilt index never serves stale results. Concurrent identical misses share one backend call
(single-flight). Redis failing degrades to the in-process LRU; it never fails a request. What a request may see
(its source filter) and spend (its search budget) is a layer of its own around this one: `sem.search.guards`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from sem.cache_stores import CacheStore, CacheUnavailable, LRUStore, RedisStore
from sem.search.base import SearchBackend, filters_domains, search_modes
from sem.types import Passage, Retrieval

if TYPE_CHECKING:
    from sem.domains import DomainFilter

log = logging.getLogger(__name__)
KEY_PREFIX = "sem:search:v1"
__all__ = [
    "CacheStore",
    "CacheUnavailable",
    "CachedSearch",
    "LRUStore",
    "RedisStore",
    "cache_key",
]  # stores re-exported


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    store_errors: int = 0
    backend_errors: int = 0
    backend_calls: int = 0
    waited_on_other_replica: int = 0
    last_store_error: str | None = field(default=None)


class Admit(Protocol):
    """Asked before a query is served whether it may be (the search budget's `Allowance.take`): `cached` says it
    would be a cache hit (or ride on a search in flight), which a budget may let through free."""

    async def __call__(self, *, cached: bool) -> bool: ...


class BackendObserver(Protocol):
    """Told about every backend call (the service turns it into Prometheus metrics)."""

    def __call__(self, backend: str, seconds: float, queries: int, error: bool) -> None: ...


def normalize_query(query: str) -> str:
    return " ".join(query.split())


def cache_key(backend: SearchBackend, query: str, k: int, mode: str | None = None, domains: str = "") -> str:
    """Versioned key: backend name and version (in a Redis Cluster hash tag), and a hash of the query, k, the
    search mode when a request asks for another one than the backend's default, and the source filter (its `key()`):
    a filtered search's results are never served to an unfiltered one, nor the other way round.

    >>> from types import SimpleNamespace as B
    >>> cache_key(B(name="bm25", version="abc"), "who  wrote Hamlet", 3)[:32]
    'sem:search:v1:{bm25:abc}:d92ed6c'
    """
    asked = f"{normalize_query(query)}\n{k}" + (f"\n{mode}" if mode else "") + (f"\n{domains}" if domains else "")
    digest = hashlib.sha256(asked.encode()).hexdigest()
    return f"{KEY_PREFIX}:{{{backend.name}:{backend.version}}}:{digest}"


def lock_key(key: str) -> str:
    return key.replace(KEY_PREFIX, KEY_PREFIX + ":lock", 1)


class _Ask(NamedTuple):
    """What a batch of queries shares: passages per query, the search mode (None: the backend's default) and the
    source filter (None: none)."""

    k: int
    mode: str | None
    domains: DomainFilter | None = None


class CachedSearch:
    """A backend behind a cache; `retrieve` reports per query whether it was cached and how long it took.

    - cache-aside, TTL with +-10% jitter (entries written together do not expire together), a short TTL for
      empty results (a corpus may gain the answer; a flaky backend may recover);
    - single-flight: N concurrent identical queries make one backend call, in this process (shared futures)
      and across replicas on one Redis (`SET NX PX` lock; the others wait for the value);
    - micro-batching: misses of concurrent requests that arrive within `batch_window_ms` reach the backend as one
      batch;
    - a failing store degrades to the in-process cache with a warning; a failing backend to "no results" for the
      queries concerned, reported in `Retrieval.error`. Neither raises.
    """

    def __init__(
        self,
        backend: SearchBackend,
        store: CacheStore | None = None,
        *,
        ttl_s: float = 7 * 24 * 3600,
        empty_ttl_s: float = 60.0,
        fallback_entries: int = 10_000,
        batch_window_ms: float = 2.0,
        lock_ms: int = 10_000,
        observer: BackendObserver | None = None,
    ) -> None:
        self.backend = backend
        self.store: CacheStore = store or LRUStore(fallback_entries)
        # Used while the primary store is unreachable, so a Redis outage still caches locally.
        self.fallback = self.store if isinstance(self.store, LRUStore) else LRUStore(fallback_entries)
        self.ttl_s = ttl_s
        self.empty_ttl_s = empty_ttl_s
        self.batch_window_s = batch_window_ms / 1000
        self.lock_ms = lock_ms
        self.observer = observer
        self.stats = CacheStats()
        self._inflight: dict[str, asyncio.Future[list[Passage]]] = {}
        self._pending: dict[_Ask, list[tuple[str, str, asyncio.Future[list[Passage]]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # flushes and waits in flight (kept: tasks are weakly held)

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def version(self) -> str:
        return self.backend.version

    @property
    def modes(self) -> tuple[str, ...]:
        return search_modes(self.backend)

    @property
    def domain_filters(self) -> bool:
        return filters_domains(self.backend)

    def check_mode(self, mode: str | None) -> None:
        """SearchModeError, naming the modes there are, for a mode the backend does not offer."""
        modes = self.modes
        if mode is None or mode in modes:
            return
        from sem.errors import SearchModeError

        offered = f"offers {list(modes)}" if modes else "has a single way to search: leave it out"
        hint = getattr(self.backend, "modes_hint", "")  # how to get more modes, from backends that know
        raise SearchModeError(f"search mode {mode!r} is not available: the {self.name} backend {offered}{hint}")

    async def search(self, queries: list[str], k: int, mode: str | None = None) -> list[list[Passage]]:
        """SearchBackend contract: passages only (errors raise)."""
        found = await self.retrieve(queries, k, mode)
        for r in found:
            if r.error:
                from sem.errors import SearchError

                raise SearchError(r.error)
        return [r.passages for r in found]

    async def retrieve(
        self,
        queries: list[str],
        k: int,
        mode: str | None = None,
        *,
        domains: DomainFilter | None = None,
        admit: Admit | None = None,
    ) -> list[Retrieval]:
        """Passages per query, from the cache or the backend; `mode` picks one of the backend's `modes`.

        `domains`: part of the key, and passed to a backend that filters its sources itself (`domain_filters`);
        the filtering of what comes back is `sem.search.guards`'. `admit`: asked before each query is served, told
        whether it would be a free cache hit; a query it refuses is not searched (`Retrieval.budget_exhausted`)."""
        self.check_mode(mode)
        modes = self.modes
        ask = _Ask(k, None if modes and mode == modes[0] else mode, domains or None)  # default mode: default's keys
        started = time.perf_counter()
        futures: list[asyncio.Future[list[Passage]] | None] = []
        results: dict[int, Retrieval] = {}
        shared: set[int] = set()
        for i, query in enumerate(queries):
            key = cache_key(self.backend, query, k, ask.mode, ask.domains.key() if ask.domains else "")
            raw = await self._get(key)
            hit = raw is not None or key in self._inflight  # another request's search in flight costs nothing either
            if admit is not None and not await admit(cached=hit):
                results[i] = Retrieval(query, [], budget_exhausted=True)
                futures.append(None)
            elif raw is not None:
                self.stats.hits += 1
                results[i] = Retrieval(query, [Passage.model_validate(p) for p in json.loads(raw)], cached=True)
                futures.append(None)
            elif key in self._inflight:  # the same query is being searched for another request
                shared.add(i)
                futures.append(self._inflight[key])
            else:
                futures.append(self._enqueue(key, normalize_query(query), ask))
        for i, future in enumerate(futures):
            if future is None:
                continue
            try:
                passages = await asyncio.shield(future)
                results[i] = Retrieval(queries[i], passages, cached=i in shared)
            except Exception as exc:
                results[i] = Retrieval(queries[i], [], error=str(exc))
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        out = [results[i] for i in range(len(queries))]
        for r in out:
            r.latency_ms = elapsed
        return out

    def _enqueue(self, key: str, query: str, ask: _Ask) -> asyncio.Future[list[Passage]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Passage]] = loop.create_future()
        self._inflight[key] = future
        self.stats.misses += 1
        batch = self._pending.setdefault(ask, [])
        batch.append((key, query, future))
        if len(batch) == 1:  # the first miss of a window schedules the flush
            self._spawn(self._flush_after_window(ask))
        return future

    async def _flush_after_window(self, ask: _Ask) -> None:
        await asyncio.sleep(self.batch_window_s)
        batch = self._pending.pop(ask, [])
        try:
            await self._compute(batch, ask)
        finally:
            for key, _, future in batch:
                self._inflight.pop(key, None)
                if not future.done():  # never leave a waiter hanging
                    future.set_exception(RuntimeError("search was interrupted"))
                    future.exception()

    async def _compute(self, batch: list[tuple[str, str, asyncio.Future[list[Passage]]]], ask: _Ask) -> None:
        mine, theirs = [], []
        for item in batch:
            (mine if await self._acquire(item[0]) else theirs).append(item)
        self.stats.waited_on_other_replica += len(theirs)
        # Another replica holds the lock of `theirs`: wait for its value while searching ours.
        await asyncio.gather(self._search_batch(mine, ask), *(self._wait_for_other(item, ask) for item in theirs))

    async def _search_batch(self, batch: list[tuple[str, str, asyncio.Future[list[Passage]]]], ask: _Ask) -> None:
        if not batch:
            return
        started = time.perf_counter()
        self.stats.backend_calls += 1
        try:
            queries = [query for _, query, _ in batch]
            # `mode` and `domains` only when asked: plugins from before them take neither
            extra: dict[str, Any] = {"mode": ask.mode} if ask.mode is not None else {}
            if ask.domains and filters_domains(self.backend):
                extra["domains"] = ask.domains
            found = await self.backend.search(queries, ask.k, **extra)
        except Exception as exc:  # any backend failure degrades to "no results", reported per query
            self.stats.backend_errors += 1
            self._observe(started, len(batch), error=True)
            message = f"{self.backend.name} search failed: {type(exc).__name__}: {exc}"
            log.warning(message)
            for key, _, future in batch:
                self._inflight.pop(key, None)
                future.set_exception(RuntimeError(message))
                future.exception()  # mark retrieved: waiters read it through shield
                await self._release(key)
            return
        self._observe(started, len(batch), error=False)
        for (key, _, future), passages in zip(batch, found, strict=True):
            self._inflight.pop(key, None)  # done: a later request reads the cache, not this future
            future.set_result(passages)
            await self._set(key, json.dumps([p.model_dump() for p in passages]).encode(), empty=not passages)
            await self._release(key)

    async def _wait_for_other(self, item: tuple[str, str, asyncio.Future[list[Passage]]], ask: _Ask) -> None:
        key, _, future = item
        deadline = time.monotonic() + self.lock_ms / 1000
        while time.monotonic() < deadline:
            raw = await self._get(key)
            if raw is not None:
                self._inflight.pop(key, None)
                future.set_result([Passage.model_validate(p) for p in json.loads(raw)])
                return
            await asyncio.sleep(0.01)
        await self._search_batch([item], ask)  # the other replica died or is too slow: search ourselves

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _observe(self, started: float, queries: int, *, error: bool) -> None:
        if self.observer is not None:
            self.observer(self.backend.name, time.perf_counter() - started, queries, error)

    async def _get(self, key: str) -> bytes | None:
        try:
            return await self.store.get(key)
        except CacheUnavailable as exc:
            self._note_store_error(exc)
            return await self.fallback.get(key)

    async def _set(self, key: str, value: bytes, *, empty: bool) -> None:
        base = self.empty_ttl_s if empty else self.ttl_s
        ttl = base * random.uniform(0.9, 1.1)
        try:
            await self.store.set(key, value, ttl)
        except CacheUnavailable as exc:
            self._note_store_error(exc)
            await self.fallback.set(key, value, ttl)

    async def _acquire(self, key: str) -> bool:
        try:
            return await self.store.acquire(lock_key(key), self.lock_ms)
        except CacheUnavailable as exc:
            self._note_store_error(exc)
            return True

    async def _release(self, key: str) -> None:
        try:
            await self.store.release(lock_key(key))
        except CacheUnavailable as exc:
            self._note_store_error(exc)

    def _note_store_error(self, exc: Exception) -> None:
        self.stats.store_errors += 1
        self.stats.last_store_error = str(exc)
        if self.stats.store_errors == 1 or self.stats.store_errors % 100 == 0:
            log.warning("cache store %s unavailable (%s); using the in-process cache", self.store.name, exc)

    async def check_health(self) -> None:
        await self.backend.check_health()

    async def aclose(self) -> None:
        await self.backend.aclose()
        await self.store.aclose()
