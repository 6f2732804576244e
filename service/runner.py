"""One way through the service for an answer, whatever the API: admission (a slot, or 503 when the queue is full),
the deadline (504), the client going away (the answer is cancelled, 499) and the metrics. Routes validate, build
the loop's options, and hand the work here."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi import Request

from sem.loop import Event, Final, Trace
from service.admission import Admission, before
from service.cancel import ClientDisconnected, run_until_disconnect
from service.metrics import Metrics


class Runner:
    def __init__(self, admission: Admission, metrics: Metrics,
                 on_trace: Callable[[Trace, str | None], Awaitable[None]] | None = None) -> None:  # fmt: skip
        self.admission = admission
        self.metrics = metrics
        self.on_trace = on_trace  # every finished answer and its model, after the metrics (the rate dial's window)

    async def _finished(self, policy: str, trace: Trace, seconds: float, dialled: bool, model: str | None) -> None:
        self.metrics.record(policy, trace, seconds, dialled=dialled)
        if self.on_trace is not None:
            await self.on_trace(trace, model)

    async def run(self, api: str, policy: str, work: Callable[[], Awaitable[Trace]], request: Request, *,
                  dialled: bool = False, model: str | None = None) -> Trace:  # fmt: skip
        """One whole answer: `work()` starts once a slot is free and is cancelled at the deadline or disconnect.
        `dialled`: its threshold came from the search-rate dial (counted for the rate achieved); `model`: the served
        model that answered (None: the default)."""
        started = time.perf_counter()
        try:
            async with self.admission.slot() as deadline:
                trace = await run_until_disconnect(before(deadline, work()), request)
        except ClientDisconnected:
            self.metrics.cancelled.labels(api).inc()
            raise
        await self._finished(policy, trace, time.perf_counter() - started, dialled, model)
        return trace

    def stream(self, api: str, policy: str, events: AsyncIterator[Event], *,
               dialled: bool = False, model: str | None = None) -> AsyncIterator[Event]:  # fmt: skip
        """The loop's events, generated inside a slot and before the deadline (each step is bounded).

        Admission is checked now: a full queue is a 503 before a stream's 200. A client that goes away closes the
        returned generator, which closes the loop's (aborting the engine request) and counts a cancellation.
        """
        self.admission.check()
        return self._stream(api, policy, events, dialled, model)

    async def _stream(self, api: str, policy: str, events: AsyncIterator[Event], dialled: bool,
                      model: str | None) -> AsyncIterator[Event]:  # fmt: skip
        started = time.perf_counter()
        ended = False  # finished or failed; otherwise the client left
        try:
            async with self.admission.slot() as deadline:
                while True:
                    try:
                        event = await before(deadline, anext(events))
                    except StopAsyncIteration:
                        ended = True
                        return
                    if isinstance(event, Final):
                        ended = True
                        await self._finished(policy, event.trace, time.perf_counter() - started, dialled, model)
                    yield event
        except Exception:
            ended = True
            raise
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            if not ended:
                self.metrics.cancelled.labels(api).inc()
