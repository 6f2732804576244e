"""Admission control and deadlines on the real asyncio loop (no service needed)."""

from __future__ import annotations

import asyncio
import time

import pytest

from sem.settings import Limits
from service.admission import Admission, DeadlineExceeded, Saturated, before


async def test_slots_queue_then_turn_away() -> None:
    admission = Admission(Limits(max_concurrent=2, max_queued=1, request_timeout_s=5))
    release = asyncio.Event()
    order: list[str] = []

    async def answer(name: str) -> None:
        async with admission.slot():
            order.append(f"start {name}")
            await release.wait()

    tasks = [asyncio.create_task(answer(n)) for n in "abc"]
    async with asyncio.timeout(60):
        while (admission.running, admission.waiting) != (2, 1):  # two hold the slots, the third waits for one
            await asyncio.sleep(0)
    assert (admission.running, admission.waiting) == (2, 1) and order == ["start a", "start b"]
    with pytest.raises(Saturated, match="2 answers running, 1 queued"):
        async with admission.slot():
            pass
    release.set()
    await asyncio.gather(*tasks)
    assert order[-1] == "start c" and (admission.running, admission.waiting) == (0, 0)


async def test_deadline_cancels_the_work() -> None:
    cancelled = asyncio.Event()

    async def endless() -> None:  # work that only the deadline can end
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with asyncio.timeout(60):  # a generous bound: a deadline that never fired must fail, not hang
        with pytest.raises(DeadlineExceeded):
            await before(time.monotonic() + 0.1, endless())
        assert cancelled.is_set()
        cancelled.clear()
        with pytest.raises(DeadlineExceeded):  # a deadline already past still cancels the work, never waits on it
            await before(time.monotonic() - 5, endless())
    assert cancelled.is_set()


async def test_waiting_longer_than_the_deadline_for_a_slot() -> None:
    admission = Admission(Limits(max_concurrent=1, max_queued=4, request_timeout_s=0.2))
    async with admission.slot():
        with pytest.raises(DeadlineExceeded, match="no free slot"):
            async with admission.slot():
                pass
    assert admission.waiting == 0
