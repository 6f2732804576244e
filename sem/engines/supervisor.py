"""Keep an engine alive: notice when it dies, fail what was in flight, start it again with a bounded backoff.

An engine can die under the service for reasons no request controls (its process killed, out of memory, a bug in
the engine). Without a supervisor every later request would fail until someone restarts the whole service by hand.
`SupervisedEngine` is an `Engine` that owns the real one: requests in flight when it dies get an `EngineError`
(the service answers 503 with Retry-After, a stream ends with an error event), requests that arrive while it is
down get `EngineRestarting` at once, and a new engine is started in the same process. After `max_restarts` failed
starts in a row it gives up (`failed`) and calls `on_fatal`, so the process can exit and its orchestrator restart it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import StrEnum
from typing import Any

from sem.engines.base import Delta, Engine, SamplingOptions
from sem.errors import ConfigError, EngineError
from sem.settings import Supervision

log = logging.getLogger(__name__)

EngineFactory = Callable[[], Awaitable[Engine]]


class EngineState(StrEnum):
    starting = "starting"
    ready = "ready"
    restarting = "restarting"
    failed = "failed"  # could not be brought back: the process should exit


class EngineRestarting(EngineError):
    """The engine is down and being started again; retry after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SupervisedEngine:
    """An `Engine` that restarts the one `factory` builds when it dies.

    Args:
        factory: starts a fresh engine (the same model each time).
        supervision: restart budget, backoff and health-watch interval.
        on_event: called with ("death" | "restart" | "fatal", reason) for metrics and the process's exit.
    """

    def __init__(
        self,
        factory: EngineFactory,
        supervision: Supervision,
        *,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        self._factory = factory
        self._cfg = supervision
        self._on_event = on_event or (lambda kind, reason: None)
        self._engine: Engine | None = None
        self._last: Engine | None = None  # the engine last started, alive or not
        self._generation = 0  # bumped at every (re)start: a late failure of an old engine is not a new death
        self.state = EngineState.starting
        self.reason: str | None = None  # why it last died, or why it could not start
        self.deaths = 0
        self.restarts = 0
        self.down_since: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    # ---- what the loop and the service read ------------------------------------------------------------

    @property
    def inner(self) -> Engine | None:
        return self._engine

    # The last engine's name, model and tokenizer stay readable while it is down (the same model comes back), so
    # a request is refused by `generate` with a clear 503, not by rendering its prompt without a tokenizer.
    @property
    def name(self) -> str:
        return self._last.name if self._last else "supervised"

    @property
    def model_name(self) -> str:
        return self._last.model_name if self._last else ""

    @property
    def tokenizer(self) -> Any:
        return self._last.tokenizer if self._last else None

    def __getattr__(self, attr: str) -> Any:  # an engine's own extras (vLLM's `load_weights`...)
        engine = self.__dict__.get("_engine")
        if engine is None:
            raise AttributeError(attr)
        return getattr(engine, attr)

    # ---- life cycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the first engine, retrying within the restart budget; `EngineError` when it cannot start.

        A `ConfigError` (a model it cannot serve, a wrong setting) is not retried: no restart would fix it.
        """
        await self._start_with_retries(first=True)
        if self.state is EngineState.failed:
            raise EngineError(f"the engine could not be started: {self.reason}")
        self._spawn(self._watch())

    async def _start_with_retries(self, *, first: bool) -> None:
        delay = self._cfg.backoff_s
        budget = self._cfg.max_restarts
        attempt = 0
        while True:
            attempt += 1
            try:
                engine = await self._factory()
            except ConfigError as exc:
                self._give_up(f"{exc}")
                raise
            except Exception as exc:  # any start failure is retried, then reported
                self.reason = f"{type(exc).__name__}: {exc}"
                of = f" of {budget + 1}" if budget is not None else ""
                log.error("engine start %d%s failed: %s", attempt, of, self.reason)
                if budget is not None and attempt > budget:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._cfg.max_backoff_s)
                continue
            self._engine = self._last = engine
            self._generation += 1
            self.state = EngineState.ready
            if not first:
                self.restarts += 1
                down = time.monotonic() - (self.down_since or time.monotonic())
                log.warning("engine restarted (attempt %d) after %.1f s down", attempt, down)
                self._on_event("restart", f"up again after {down:.1f} s")
            self.down_since = None
            return
        self._give_up(f"{attempt} starts failed; the last: {self.reason}")

    def _give_up(self, reason: str) -> None:
        self.state = EngineState.failed
        self.reason = reason
        log.critical("the engine cannot be brought back: %s", reason)
        self._on_event("fatal", reason)

    def _died(self, generation: int, reason: str) -> None:
        """Record a death once (concurrent failures of the same engine are one death) and restart."""
        if generation != self._generation or self.state is not EngineState.ready or self._closing:
            return
        self.state = EngineState.restarting
        self.reason = reason
        self.deaths += 1
        self.down_since = time.monotonic()
        log.error("the engine died: %s; restarting it", reason)
        self._on_event("death", reason)
        self._spawn(self._restart())

    async def _restart(self) -> None:
        old, self._engine = self._engine, None
        if old is not None:
            with contextlib.suppress(Exception):  # it is dead: closing is best effort
                await old.aclose()
        with contextlib.suppress(ConfigError):
            await self._start_with_retries(first=False)

    async def _watch(self) -> None:
        """Notice a death while idle (no request would see it until the next one failed)."""
        while self.state is not EngineState.failed and not self._closing:
            await asyncio.sleep(self._cfg.watch_interval_s)
            engine, generation = self._engine, self._generation
            if self.state is not EngineState.ready or engine is None:
                continue
            if problem := await self._health_problem(engine):
                self._died(generation, problem)

    async def _health_problem(self, engine: Engine) -> str | None:
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that lands as the inner call
            # finishes, and the watch would then outlive aclose (seen as a hung shutdown under test)
            async with asyncio.timeout(self._cfg.health_timeout_s):
                await engine.check_health()
        except Exception as exc:  # EngineError, a timeout, a remote engine's own error
            return f"{type(exc).__name__}: {exc}"
        return None

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- the Engine contract -----------------------------------------------------------------------------

    def require_ready(self) -> None:
        """Raise what a request would get now if the engine cannot take it (`EngineRestarting`, `EngineError`)."""
        self._require()

    def _require(self) -> tuple[Engine, int]:
        if self.state is EngineState.ready and self._engine is not None:
            return self._engine, self._generation
        if self.state is EngineState.failed:
            raise EngineError(f"the engine could not be brought back: {self.reason}")
        raise EngineRestarting(
            f"the model engine is {self.state.value} ({self.reason or 'loading'}); retry shortly",
            retry_after_s=max(1, round(self._cfg.backoff_s * 2)),
        )

    async def generate(
        self, prompt_ids: list[int], options: SamplingOptions, *, request_id: str
    ) -> AsyncIterator[Delta]:
        engine, generation = self._require()
        try:
            async for delta in engine.generate(prompt_ids, options, request_id=request_id):
                yield delta
        except EngineError as exc:
            # A failed request need not mean a dead engine (a remote engine's 4xx): ask it.
            if problem := await self._health_problem(engine):
                self._died(generation, f"{exc} ({problem})")
            raise

    async def abort(self, request_id: str) -> None:
        if self._engine is not None and self.state is EngineState.ready:
            with contextlib.suppress(Exception):
                await self._engine.abort(request_id)

    async def check_health(self) -> None:
        engine, generation = self._require()
        if problem := await self._health_problem(engine):
            self._died(generation, problem)
            self._require()

    async def aclose(self) -> None:
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        engine, self._engine, self._last = self._engine, None, None
        if engine is not None:
            await engine.aclose()
