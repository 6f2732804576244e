"""The search-rate dial's window shared through a real Redis: two replicas read one window and search the rate asked
between them; a Redis that is down degrades to each process's own window."""

from __future__ import annotations

import random

from sem.rate import SearchRateDial, rate_threshold
from tests.conftest import free_port


async def test_two_replicas_share_one_window_and_reach_the_rate(redis_server: str) -> None:
    one = SearchRateDial("world", calibrated=0.9, redis_url=redis_server, size=300, warmup=30)
    two = SearchRateDial("world", calibrated=0.9, redis_url=redis_server, size=300, warmup=30)
    rng = random.Random(11)
    searched = counted = 0
    seen: list[float] = []
    for i in range(1200):
        replica = (one, two)[rng.random() < 0.5]  # a load balancer's pick
        c = rng.betavariate(4, 1)
        threshold = await replica.threshold(0.3)
        if i >= 300:
            searched += c < threshold
            counted += 1
        await replica.observe(c)
        seen.append(c)
    assert await one.threshold(0.3) == await two.threshold(0.3) == rate_threshold(seen[-300:], 0.3)
    assert abs(searched / counted - 0.3) <= 0.05
    assert one.redis_errors == two.redis_errors == 0
    await one.aclose()
    await two.aclose()


async def test_a_dead_redis_degrades_to_the_process_window() -> None:
    dial = SearchRateDial("world", calibrated=0.9, redis_url=f"redis://127.0.0.1:{free_port()}/0", warmup=3)
    for c in (0.2, 0.4, 0.6, 0.8):
        await dial.observe(c)
    assert await dial.threshold(0.5) == 0.6 and dial.redis_errors >= 4
    await dial.aclose()
