"""API keys and per-key rate limits.

Keys are never stored or logged in clear: settings (and the optional Redis set `sem:api-keys`) hold sha256 digests,
a request's `Authorization: Bearer <key>` is hashed and compared in constant time. Rate limits count requests per
key (per client IP when auth is off) in fixed windows (`rate_window_s`), in Redis when there is one (shared by every
replica), else in process. Redis failing never blocks traffic: the limiter falls back to its in-process count.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

from sem.keys import REDIS_SET, hash_key, principal_of
from sem.settings import Auth
from service.exceptions import RateLimited, Unauthorized

__all__ = ["RateLimited", "Security", "Unauthorized", "bearer"]
log = logging.getLogger(__name__)


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class Security:
    def __init__(self, settings: Auth, redis_url: str | None = None, *, clock: Callable[[], float] = time.time) -> None:
        """`clock`: seconds since the epoch, which the rate windows are counted in (tests move it)."""
        self.settings = settings
        self.clock = clock
        self._redis: Any = None
        if redis_url and (settings.redis_keys or settings.rate_limit):
            import redis.asyncio as redis

            self._redis = redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._windows: dict[str, tuple[int, int]] = {}  # principal -> (window, count), the in-process limiter

    async def authenticate(self, authorization: str | None, client: str) -> str:
        """The principal a request counts against: `key:<digest prefix>`, or `ip:<address>` when auth is off."""
        if not self.settings.enabled:
            return f"ip:{client}"
        key = bearer(authorization)
        if key is None:
            raise Unauthorized("missing API key: send the header `Authorization: Bearer <key>`")
        digest = hash_key(key)
        # compare against every configured digest, without stopping at the first match
        known = [hmac.compare_digest(digest, h.strip().lower()) for h in self.settings.api_key_hashes]
        if not any(known) and not await self._in_redis(digest):
            raise Unauthorized("invalid API key")
        return principal_of(digest)

    async def _in_redis(self, digest: str) -> bool:
        if not (self.settings.redis_keys and self._redis is not None):
            return False
        try:
            return bool(await self._redis.sismember(REDIS_SET, digest))
        except Exception as exc:  # Redis down: keys from settings still work
            log.warning("api keys in Redis unavailable: %s", type(exc).__name__)
            return False

    async def check_rate(self, principal: str) -> None:
        limit, span = self.settings.rate_limit, self.settings.rate_window_s
        if not limit:
            return
        now = self.clock()
        window = int(now // span)
        count = await self._count_redis(principal, window)
        if count is None:
            start, seen = self._windows.get(principal, (window, 0))
            count = seen + 1 if start == window else 1
            if len(self._windows) > 10_000:  # many clients: forget the windows that are over
                self._windows = {p: wc for p, wc in self._windows.items() if wc[0] == window}
            self._windows[principal] = (window, count)
        if count > limit:
            retry = max(1, int((window + 1) * span - now) + 1)
            raise RateLimited(f"rate limit of {limit} requests per {span} s reached; retry in {retry} s", retry)

    async def _count_redis(self, principal: str, window: int) -> int | None:
        if self._redis is None:
            return None
        key = f"sem:rate:{{{principal}}}:{window}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                count, _ = await pipe.incr(key).expire(key, 2 * self.settings.rate_window_s).execute()
            return int(count)
        except Exception as exc:
            log.warning("rate limiter falls back to in-process counts: Redis %s", type(exc).__name__)
            return None

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
