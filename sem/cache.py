"""Search-result cache: Redis when configured (shared by replicas), an in-process LRU otherwise.

`CachedSearch` wraps a backend. Keys are versioned by backend name and version (the corpus hash for bm25),
so a rebuilt index never serves stale results. Concurrent identical misses share one backend call
(single-flight). Redis failing degrades to the in-process LRU; it never fails a request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

from sem.search.base import Passage, SearchBackend

log = logging.getLogger(__name__)
KEY_PREFIX = "sem:search:v1"


class CacheUnavailable(Exception):
    """The cache store could not be reached."""


class CacheStore(Protocol):
    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: int) -> None: ...

    async def aclose(self) -> None: ...


class LRUStore:
    """In-process LRU with per-entry expiry."""

    name = "memory"

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires < time.monotonic():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        self._data[key] = (time.monotonic() + ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    async def aclose(self) -> None:
        self._data.clear()


class RedisStore:
    """redis.asyncio with short timeouts: a slow or dead Redis must not hold a request."""

    name = "redis"

    def __init__(self, url: str, timeout_s: float = 0.5) -> None:
        import redis.asyncio as redis

        self._client = redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    async def get(self, key: str) -> bytes | None:
        import redis

        try:
            return await self._client.get(key)
        except (redis.RedisError, OSError) as exc:
            raise CacheUnavailable(str(exc)) from exc

    async def set(self, key: str, value: bytes, ttl_s: int) -> None:
        import redis

        try:
            await self._client.set(key, value, ex=ttl_s)
        except (redis.RedisError, OSError) as exc:
            raise CacheUnavailable(str(exc)) from exc

    async def ping(self) -> bool:
        try:
            return bool(await self._client.ping())
        except Exception:
            return False

    async def aclose(self) -> None:
        await self._client.aclose()


@dataclass(slots=True)
class Retrieval:
    """What one query found, and how."""

    query: str
    passages: list[Passage]
    cached: bool = False
    latency_ms: float = 0.0
    error: str | None = None


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    store_errors: int = 0
    backend_errors: int = 0
    last_store_error: str | None = field(default=None)


def normalize_query(query: str) -> str:
    return " ".join(query.split())


def cache_key(backend: SearchBackend, query: str, k: int) -> str:
    """Versioned key: backend name and version, k, and a hash of the normalised query.

    >>> from types import SimpleNamespace as B
    >>> cache_key(B(name="bm25", version="abc"), "who  wrote Hamlet", 3)[:30]
    'sem:search:v1:bm25:abc:k3:2038'
    """
    digest = hashlib.sha256(normalize_query(query).encode()).hexdigest()[:32]
    return f"{KEY_PREFIX}:{backend.name}:{backend.version}:k{k}:{digest}"


class CachedSearch:
    """A backend behind a cache; `retrieve` reports per query whether it was cached and how long it took."""

    def __init__(
        self,
        backend: SearchBackend,
        store: CacheStore | None = None,
        *,
        ttl_s: int = 7 * 24 * 3600,
        fallback_entries: int = 10_000,
    ) -> None:
        self.backend = backend
        self.store: CacheStore = store or LRUStore(fallback_entries)
        # Used while the primary store is unreachable, so a Redis outage still caches locally.
        self.fallback = self.store if isinstance(self.store, LRUStore) else LRUStore(fallback_entries)
        self.ttl_s = ttl_s
        self.stats = CacheStats()
        self._inflight: dict[str, asyncio.Future[list[Passage]]] = {}

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def version(self) -> str:
        return self.backend.version

    async def search(self, queries: list[str], k: int) -> list[list[Passage]]:
        """SearchBackend contract: passages only (errors raise)."""
        found = await self.retrieve(queries, k)
        for r in found:
            if r.error:
                from sem.errors import SearchError

                raise SearchError(r.error)
        return [r.passages for r in found]

    async def retrieve(self, queries: list[str], k: int) -> list[Retrieval]:
        started = time.perf_counter()
        keys = [cache_key(self.backend, q, k) for q in queries]
        results: dict[int, Retrieval] = {}
        to_compute: dict[str, list[int]] = {}
        to_await: dict[int, asyncio.Future[list[Passage]]] = {}
        for i, (query, key) in enumerate(zip(queries, keys, strict=True)):
            raw = await self._get(key)
            if raw is not None:
                self.stats.hits += 1
                passages = [Passage.model_validate(p) for p in json.loads(raw)]
                results[i] = Retrieval(query, passages, cached=True)
            elif key in self._inflight:  # the same query is being searched for another request
                to_await[i] = self._inflight[key]
            else:
                to_compute.setdefault(key, []).append(i)
        if to_compute:
            await self._compute(queries, k, to_compute, results)
        for i, future in to_await.items():
            try:
                results[i] = Retrieval(queries[i], await asyncio.shield(future), cached=True)
            except Exception as exc:
                results[i] = Retrieval(queries[i], [], error=str(exc))
        elapsed = (time.perf_counter() - started) * 1000
        out = [results[i] for i in range(len(queries))]
        for r in out:
            r.latency_ms = round(elapsed, 3)
        return out

    async def _compute(
        self, queries: list[str], k: int, to_compute: dict[str, list[int]], results: dict[int, Retrieval]
    ) -> None:
        loop = asyncio.get_running_loop()
        futures = {key: loop.create_future() for key in to_compute}
        self._inflight.update(futures)
        batch_keys = list(to_compute)
        batch = [normalize_query(queries[to_compute[key][0]]) for key in batch_keys]
        self.stats.misses += len(batch_keys)
        try:
            found = await self.backend.search(batch, k)
        except Exception as exc:  # any backend failure degrades to "no results", reported per query
            self.stats.backend_errors += 1
            message = f"{self.backend.name} search failed: {type(exc).__name__}: {exc}"
            log.warning(message)
            for key in batch_keys:
                futures[key].set_exception(RuntimeError(message))
                futures[key].exception()  # mark retrieved: waiters read it through shield
                for i in to_compute[key]:
                    results[i] = Retrieval(queries[i], [], error=message)
            return
        finally:
            for key in batch_keys:
                self._inflight.pop(key, None)
        for key, passages in zip(batch_keys, found, strict=True):
            futures[key].set_result(passages)
            for i in to_compute[key]:
                results[i] = Retrieval(queries[i], passages)
            payload = json.dumps([p.model_dump() for p in passages]).encode()
            await self._set(key, payload)

    async def _get(self, key: str) -> bytes | None:
        try:
            return await self.store.get(key)
        except CacheUnavailable as exc:
            self._note_store_error(exc)
            return await self.fallback.get(key)

    async def _set(self, key: str, value: bytes) -> None:
        try:
            await self.store.set(key, value, self.ttl_s)
        except CacheUnavailable as exc:
            self._note_store_error(exc)
            await self.fallback.set(key, value, self.ttl_s)

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
