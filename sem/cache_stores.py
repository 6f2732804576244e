"""Where cached search results live: `LRUStore` in the process, `RedisStore` shared by replicas (short timeouts;
its failures are `CacheUnavailable`, which `sem.cache.CachedSearch` turns into a fallback, never an error)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol


class CacheUnavailable(Exception):
    """The cache store could not be reached."""


class CacheStore(Protocol):
    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def acquire(self, key: str, ttl_ms: int) -> bool:
        """Take a short lock shared by every replica on this store (True: ours to compute)."""
        ...

    async def release(self, key: str) -> None: ...

    async def aclose(self) -> None: ...


class LRUStore:
    """In-process LRU with per-entry expiry, on `clock` (`time.monotonic` unless a test moves its own)."""

    name = "memory"

    def __init__(self, max_entries: int = 10_000, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def get(self, key: str) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        expires, value = item
        if expires <= self.clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._data[key] = (self.clock() + ttl_s, value)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)

    async def acquire(self, key: str, ttl_ms: int) -> bool:
        return True  # one process: the in-process single-flight already covers it

    async def release(self, key: str) -> None:
        return None

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

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        import redis

        try:
            await self._client.set(key, value, px=max(1, int(ttl_s * 1000)))
        except (redis.RedisError, OSError) as exc:
            raise CacheUnavailable(str(exc)) from exc

    async def acquire(self, key: str, ttl_ms: int) -> bool:
        import redis

        try:
            return bool(await self._client.set(key, b"1", nx=True, px=ttl_ms))
        except (redis.RedisError, OSError) as exc:
            raise CacheUnavailable(str(exc)) from exc

    async def release(self, key: str) -> None:
        import redis

        try:
            await self._client.delete(key)
        except (redis.RedisError, OSError) as exc:
            raise CacheUnavailable(str(exc)) from exc

    async def aclose(self) -> None:
        await self._client.aclose()
