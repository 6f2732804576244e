"""Admission control: at most `max_concurrent` answers generate at once, `max_queued` more wait their turn, and
beyond that a request is turned away at once (503 + Retry-After) instead of piling up until the process falls over.
Each admitted answer also gets a deadline (`request_timeout_s`, engine and searches together)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from sem.settings import Limits
from service.exceptions import DeadlineExceeded, Saturated

__all__ = ["Admission", "DeadlineExceeded", "Saturated", "before"]
T = TypeVar("T")


class Admission:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.running = 0
        self.waiting = 0
        self._slots: asyncio.Semaphore | None = None  # created in the serving event loop

    def check(self) -> None:
        """Fail fast when a new request could not even queue."""
        if self.running >= self.limits.max_concurrent and self.waiting >= self.limits.max_queued:
            raise Saturated(
                f"the service is at capacity ({self.running} answers running, {self.waiting} queued); retry shortly"
            )

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """Hold one generation slot; yields the request's deadline (a `time.monotonic()` value)."""
        self.check()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limits.max_concurrent)
        deadline = time.monotonic() + self.limits.request_timeout_s
        self.waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), self.limits.request_timeout_s)
        except TimeoutError as exc:
            raise DeadlineExceeded(f"no free slot within the {self.limits.request_timeout_s:g} s deadline") from exc
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield deadline
        finally:
            self.running -= 1
            self._slots.release()


async def before(deadline: float, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and so its engine request) when the deadline passes."""
    try:
        return await asyncio.wait_for(work, max(deadline - time.monotonic(), 0.001))
    except TimeoutError as exc:
        raise DeadlineExceeded("the answer did not finish within the request deadline; ask for fewer tokens") from exc
