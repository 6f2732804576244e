"""The search cache against a real redis-server: hit, miss, the TTL Redis holds, shared across instances, Redis down."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sem.cache import CachedSearch, RedisStore, cache_key
from sem.search.bm25 import BM25Backend
from tests.conftest import free_port


async def bm25(corpus: Path) -> BM25Backend:
    backend = BM25Backend(corpus)
    await backend.load()
    return backend


async def test_miss_then_hit_shared_between_replicas(redis_server: str, tiny_corpus: Path) -> None:
    replica_a = CachedSearch(await bm25(tiny_corpus), RedisStore(redis_server))
    replica_b = CachedSearch(await bm25(tiny_corpus), RedisStore(redis_server))
    (miss,) = await replica_a.retrieve(["Hamlet tragedy"], 2)
    (hit,) = await replica_b.retrieve(["Hamlet tragedy"], 2)  # another process would see the same
    assert not miss.cached and hit.cached
    assert [p.id for p in hit.passages] == [p.id for p in miss.passages] and hit.passages[0].id == "hamlet"
    assert hit.passages[0].score == miss.passages[0].score
    assert replica_a.stats.store_errors == replica_b.stats.store_errors == 0
    await replica_a.store.aclose()
    await replica_b.store.aclose()


async def test_entries_carry_their_ttl_into_redis(redis_server: str, tiny_corpus: Path) -> None:
    """Redis, not this process, expires an entry: the test reads the TTL Redis holds and expires the key itself (what
    Redis does when the TTL runs out), instead of waiting for a real clock."""
    import redis.asyncio as redis

    backend = await bm25(tiny_corpus)
    cache = CachedSearch(backend, RedisStore(redis_server), ttl_s=3600)
    (miss,) = await cache.retrieve(["Moon satellite"], 1)
    (hit,) = await cache.retrieve(["Moon satellite"], 1)
    assert not miss.cached and hit.cached and hit.passages[0].id == "moon"
    client = redis.from_url(redis_server)
    key = cache_key(backend, "Moon satellite", 1)
    ttl_ms = await client.pttl(key)
    # 3600 s +-10% jitter, less the moments since it was written (a bound that only an hour-long stall could break)
    assert 0.9 * 3600_000 - 600_000 < ttl_ms <= 1.1 * 3600_000, ttl_ms
    await client.pexpire(key, 0)  # the TTL runs out
    assert await client.exists(key) == 0
    (expired,) = await cache.retrieve(["Moon satellite"], 1)
    assert not expired.cached and expired.passages[0].id == "moon"
    assert 0 < await client.pttl(key) <= 1.1 * 3600_000  # written again, with a fresh TTL
    assert cache.stats.store_errors == 0
    await client.aclose()
    await cache.store.aclose()


async def test_redis_down_falls_back_without_error(tiny_corpus: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    cache = CachedSearch(await bm25(tiny_corpus), RedisStore(dead, timeout_s=0.2))
    (first,) = await cache.retrieve(["capital of France"], 1)
    (second,) = await cache.retrieve(["capital of France"], 1)
    assert first.passages[0].id == "paris" and first.error is None
    assert second.cached  # served by the in-process fallback
    assert cache.stats.store_errors >= 2 and cache.stats.last_store_error
    await cache.store.aclose()


class HeldCounting:
    """A backend that counts calls and holds each one until `ready()` says so: concurrent requests overlap by
    construction, not because a call takes long enough."""

    name = "held"
    version = "1"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.ready = lambda: True

    async def search(self, queries, k):
        self.calls.append(list(queries))
        async with asyncio.timeout(60):  # generous: only turns a hang into a failure
            while not self.ready():
                await asyncio.sleep(0.01)
        from sem.search.base import Passage

        return [[Passage(id=q, text=f"about {q}")] for q in queries]

    async def check_health(self) -> None: ...

    async def aclose(self) -> None: ...


async def test_single_flight_across_replicas(redis_server: str) -> None:
    backend = HeldCounting()  # one backend seen by two "replicas" so its calls can be counted together
    replicas = [CachedSearch(backend, RedisStore(redis_server)) for _ in range(2)]
    # the replica that takes the lock searches only once the other one has found the lock taken and waits for it
    backend.ready = lambda: sum(r.stats.waited_on_other_replica for r in replicas) == 1
    found = await asyncio.gather(*(replicas[i % 2].retrieve(["the same question"], 3) for i in range(20)))
    assert all(r[0].passages and r[0].passages[0].id == "the same question" for r in found)
    assert backend.calls == [["the same question"]]
    assert sorted(r.stats.waited_on_other_replica for r in replicas) == [0, 1]
    for r in replicas:
        await r.store.aclose()


async def test_redis_killed_mid_test_searches_still_answer(tmp_path: Path, tiny_corpus: Path) -> None:
    import shutil
    import socket
    import subprocess

    port = free_port()
    proc = subprocess.Popen(
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port), "--save", "", "--dir",
         str(tmp_path)], stdout=subprocess.DEVNULL,
    )  # fmt: skip
    async with asyncio.timeout(60):  # until it takes connections
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                await asyncio.sleep(0.05)
    cache = CachedSearch(await bm25(tiny_corpus), RedisStore(f"redis://127.0.0.1:{port}/0", timeout_s=0.2))
    (before,) = await cache.retrieve(["Hamlet tragedy"], 1)
    assert before.passages[0].id == "hamlet" and cache.stats.store_errors == 0
    proc.kill()
    proc.wait()
    (after,) = await cache.retrieve(["capital of France"], 1)
    (again,) = await cache.retrieve(["capital of France"], 1)
    assert after.passages[0].id == "paris" and after.error is None
    assert again.cached and cache.stats.store_errors > 0
    await cache.store.aclose()
