"""API keys and the in-process rate limiter, on a clock the test moves (Redis: tests/integration/test_hardening.py)."""

from __future__ import annotations

import pytest

from sem.keys import hash_key
from sem.settings import Auth
from service.security import RateLimited, Security, Unauthorized, bearer


async def test_keys_are_checked_by_digest() -> None:
    security = Security(Auth(api_key_hashes=[hash_key("sk-good")]))
    assert (await security.authenticate("Bearer sk-good", "1.2.3.4")).startswith("key:")
    for header in (None, "Bearer sk-bad", "sk-good", "Basic sk-good", "Bearer "):
        with pytest.raises(Unauthorized):
            await security.authenticate(header, "1.2.3.4")
    assert bearer("bearer  sk-x ") == "sk-x"


class Clock:
    """Seconds since the epoch that only the test moves: a window turns over when the test says so."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_without_redis_the_rate_limit_counts_in_process() -> None:
    clock = Clock(3600 * 470_000 + 1000.5)  # 1000.5 s into a one-hour window
    security = Security(Auth(rate_limit=2, rate_window_s=3600), clock=clock)
    principal = await security.authenticate(None, "10.0.0.1")  # auth off: counted per client address
    assert principal == "ip:10.0.0.1"
    await security.check_rate(principal)
    await security.check_rate(principal)
    with pytest.raises(RateLimited) as excinfo:
        await security.check_rate(principal)
    assert excinfo.value.retry_after_s == 2600  # 2599.5 s left in the window, rounded up
    assert "rate limit of 2 requests per 3600 s reached; retry in 2600 s" in str(excinfo.value)
    await security.check_rate("ip:10.0.0.2")  # another client has its own count

    clock.now += 2599.49  # the window's last hundredth of a second: still spent
    with pytest.raises(RateLimited) as excinfo:
        await security.check_rate(principal)
    assert excinfo.value.retry_after_s == 1
    clock.now += 0.02  # the next window: two more
    await security.check_rate(principal)
    await security.check_rate(principal)
    with pytest.raises(RateLimited):
        await security.check_rate(principal)
