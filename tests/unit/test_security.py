"""API keys and the in-process rate limiter (the Redis path runs in tests/integration/test_hardening.py)."""

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


async def test_without_redis_the_rate_limit_counts_in_process() -> None:
    security = Security(Auth(rate_limit=2, rate_window_s=3600))
    principal = await security.authenticate(None, "10.0.0.1")  # auth off: counted per client address
    assert principal == "ip:10.0.0.1"
    await security.check_rate(principal)
    await security.check_rate(principal)
    with pytest.raises(RateLimited) as excinfo:
        await security.check_rate(principal)
    assert 1 <= excinfo.value.retry_after_s <= 3601
    await security.check_rate("ip:10.0.0.2")  # another client has its own count
