"""The engine supervisor's every branch, and the app's probes and errors around it, in process.

A death is a fault these tests cannot cause in a scripted engine, so `MortalEngine` fakes one (a flag that makes it
fail its requests and its health check, as a vLLM engine whose core process was killed does). The real engine is
killed with kill -9 in tests/integration/test_engine_faults.py.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sem.engines.base import Delta, SamplingOptions
from sem.engines.replay import ReplayEngine
from sem.engines.supervisor import EngineRestarting, EngineState, SupervisedEngine
from sem.errors import ConfigError, EngineError
from sem.settings import Settings, Supervision
from service.app import create_app

FAST = Supervision(max_restarts=2, backoff_s=0.01, max_backoff_s=0.02, watch_interval_s=0.02, health_timeout_s=1)
OPTIONS = SamplingOptions(max_tokens=16, stop=["</search>"])


class MortalEngine(ReplayEngine):
    """A replay engine that can die: then every request and health check fails, as a dead vLLM engine's do."""

    def __init__(self, tokenizer, replies: list[str]) -> None:
        super().__init__(tokenizer, replies)
        self.dead = False
        self.closed = False
        self.fail_next = False  # one failed request on a live engine (a remote engine's 4xx, say)

    async def generate(self, prompt_ids, options, *, request_id) -> AsyncIterator[Delta]:
        if self.fail_next:
            self.fail_next = False
            raise EngineError("one request failed")
        async for delta in super().generate(prompt_ids, options, request_id=request_id):
            if self.dead:
                raise EngineError("EngineCore encountered an issue")
            yield delta

    async def check_health(self) -> None:
        if self.dead:
            raise EngineError("engine is dead")

    async def aclose(self) -> None:
        self.closed = True


class Factory:
    """Starts MortalEngines; `failures` starts fail first (an exception each), then they succeed."""

    def __init__(self, tokenizer, failures: list[BaseException] | None = None) -> None:
        self.tokenizer = tokenizer
        self.failures = list(failures or [])
        self.started: list[MortalEngine] = []
        self.calls = 0

    async def __call__(self) -> MortalEngine:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        engine = MortalEngine(self.tokenizer, ["<answer>Paris</answer>"] * 50)
        self.started.append(engine)
        return engine


async def answer(engine: SupervisedEngine, tokenizer) -> str:
    ids = tokenizer.encode("What is the capital of France?")
    return "".join([d.text async for d in engine.generate(ids, OPTIONS, request_id="r")])


async def until(condition, timeout_s: float = 60.0) -> None:
    """Wait for `condition`; the bound is generous: it only turns a hang into a failure."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_death_fails_the_request_then_the_engine_is_restarted(tokenizer) -> None:
    factory, events = Factory(tokenizer), []
    engine = SupervisedEngine(factory, FAST, on_event=lambda kind, why: events.append(kind))
    await engine.start()
    assert "Paris" in await answer(engine, tokenizer)
    factory.started[0].dead = True
    with pytest.raises(EngineError, match="EngineCore"):
        await answer(engine, tokenizer)
    assert engine.state in (EngineState.restarting, EngineState.ready)
    await until(lambda: engine.state is EngineState.ready)
    assert factory.started[0].closed and len(factory.started) == 2
    assert (engine.deaths, engine.restarts, events) == (1, 1, ["death", "restart"])
    assert "Paris" in await answer(engine, tokenizer)  # the new engine answers
    await engine.aclose()


async def test_requests_while_restarting_are_refused_at_once_with_a_retry_hint(tokenizer) -> None:
    gate = asyncio.Event()
    factory = Factory(tokenizer)

    async def slow_restart() -> MortalEngine:
        if factory.calls:  # the first start is quick, the restart waits for the test
            await gate.wait()
        return await factory()

    engine = SupervisedEngine(slow_restart, FAST)
    await engine.start()
    factory.started[0].dead = True
    with pytest.raises(EngineError):
        await answer(engine, tokenizer)
    with pytest.raises(EngineRestarting) as refused:
        await answer(engine, tokenizer)
    assert refused.value.retry_after_s >= 1 and "restarting" in str(refused.value)
    with pytest.raises(EngineRestarting):
        await engine.check_health()
    gate.set()
    await until(lambda: engine.state is EngineState.ready)
    await engine.check_health()
    await engine.aclose()


async def test_a_failed_request_on_a_live_engine_is_not_a_death(tokenizer) -> None:
    factory = Factory(tokenizer)
    engine = SupervisedEngine(factory, FAST)
    await engine.start()
    factory.started[0].fail_next = True
    with pytest.raises(EngineError, match="one request failed"):
        await answer(engine, tokenizer)
    assert engine.state is EngineState.ready and engine.deaths == 0 and factory.calls == 1
    await engine.aclose()


async def test_an_idle_death_is_noticed_by_the_watch(tokenizer) -> None:
    factory = Factory(tokenizer)
    engine = SupervisedEngine(factory, FAST)
    await engine.start()
    factory.started[0].dead = True  # no request sees it
    await until(lambda: engine.restarts == 1)
    assert engine.deaths == 1 and engine.state is EngineState.ready
    await engine.aclose()


async def test_start_retries_within_the_budget(tokenizer) -> None:
    factory = Factory(tokenizer, [RuntimeError("out of memory"), OSError("port taken")])
    engine = SupervisedEngine(factory, FAST)  # 2 restarts: 3 starts in all
    await engine.start()
    assert engine.state is EngineState.ready and factory.calls == 3
    await engine.aclose()


async def test_start_gives_up_after_the_budget_and_says_why(tokenizer) -> None:
    factory, events = Factory(tokenizer, [RuntimeError(f"boom {i}") for i in range(5)]), []
    engine = SupervisedEngine(factory, FAST, on_event=lambda kind, why: events.append((kind, why)))
    with pytest.raises(EngineError, match="3 starts failed; the last: RuntimeError: boom 2"):
        await engine.start()
    assert factory.calls == 3 and engine.state is EngineState.failed
    assert events == [("fatal", "3 starts failed; the last: RuntimeError: boom 2")]


async def test_a_model_it_cannot_serve_is_not_retried(tokenizer) -> None:
    factory = Factory(tokenizer, [ConfigError("no chat template; set SEM_CHAT_TEMPLATE")])
    engine = SupervisedEngine(factory, FAST)
    with pytest.raises(ConfigError, match="SEM_CHAT_TEMPLATE"):
        await engine.start()
    assert factory.calls == 1 and engine.state is EngineState.failed


async def test_restarts_that_keep_failing_end_in_failed(tokenizer) -> None:
    factory = Factory(tokenizer)
    engine = SupervisedEngine(factory, FAST)
    await engine.start()
    factory.failures = [RuntimeError("no memory")] * 3
    factory.started[0].dead = True
    await until(lambda: engine.state is EngineState.failed)
    assert factory.calls == 4 and "no memory" in (engine.reason or "")
    with pytest.raises(EngineError, match="could not be brought back"):
        await answer(engine, tokenizer)
    await engine.aclose()


# ---- the app around it: probes, errors, metrics, the fatal hook -------------------------------------------


@pytest.fixture
def app_settings(settings: Settings, tiny_corpus: Path) -> Settings:
    # No idle watch here: each test makes the death happen inside a request, and a watch that noticed it first would
    # race the test's own steps.
    quiet = FAST.model_copy(update={"watch_interval_s": 3600})
    return settings.model_copy(update={"corpus": tiny_corpus, "supervision": quiet})


def wait_for(condition: Callable[[], bool], why: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(why)
        time.sleep(0.01)


def wait_ready(client: TestClient) -> None:
    wait_for(lambda: client.get("/readyz").status_code == 200, "the app did not get ready")


NEVER = {"question": "Capital of France?", "search": "never"}


def test_the_app_answers_503_while_restarting_then_answers_again(app_settings, tokenizer) -> None:
    gate = asyncio.Event()
    factory = Factory(tokenizer)

    async def restart_on_signal() -> MortalEngine:
        if factory.calls:
            while not gate.is_set():
                await asyncio.sleep(0.01)
        return await factory()

    fatal: list[str] = []
    app = create_app(app_settings, engine_factory=restart_on_signal, on_fatal=fatal.append)
    with TestClient(app) as client:
        try:
            wait_ready(client)
            assert client.post("/v1/answer", json=NEVER).status_code == 200
            factory.started[0].dead = True
            failed = client.post("/v1/answer", json=NEVER)
            assert failed.status_code == 503 and failed.headers["retry-after"]
            assert failed.json()["error"]["code"] == "engine_error"
            refused = client.post("/v1/answer", json=NEVER)
            assert refused.status_code == 503 and "restarting" in refused.json()["error"]["message"]
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "restarting"
            alive = client.get("/healthz")  # down but recovering: a liveness probe must not kill it
            assert alive.status_code == 200 and alive.json()["status"] == "restarting"
            gate.set()
            wait_ready(client)
            assert client.post("/v1/answer", json=NEVER).status_code == 200
            metrics = client.get("/metrics").text
            assert 'sem_engine_events_total{event="death"} 1.0' in metrics
            assert 'sem_engine_events_total{event="restart"} 1.0' in metrics
        finally:
            gate.set()  # a failed assertion must not leave the restart waiting (the shutdown would hang)
    assert fatal == []


def test_a_stream_open_at_the_death_ends_with_an_error_event(app_settings, tokenizer) -> None:
    factory = Factory(tokenizer)
    app = create_app(app_settings, engine_factory=factory)
    with TestClient(app) as client:
        wait_ready(client)
        factory.started[0].dead = True  # the death happens inside the stream, after its 200
        body = {"model": "replay", "messages": [{"role": "user", "content": "Capital of France?"}], "stream": True,
                "sem": {"search": "never"}}  # fmt: skip
        with client.stream("POST", "/v1/chat/completions", json=body) as reply:
            assert reply.status_code == 200
            frames = [line[6:] for line in reply.iter_lines() if line.startswith("data: ")]
        assert frames[-1] == "[DONE]"
        error = json.loads(frames[-2])["error"]
        assert error["type"] == "service_unavailable" and error["code"] == "engine_error"


def test_an_engine_that_cannot_be_brought_back_fails_liveness_and_calls_on_fatal(app_settings, tokenizer) -> None:
    factory = Factory(tokenizer, [RuntimeError("no memory")] * 3)
    fatal: list[str] = []
    app = create_app(app_settings, engine_factory=factory, on_fatal=fatal.append)
    with TestClient(app) as client:
        wait_for(lambda: bool(fatal), "on_fatal was not called")
        assert "no memory" in fatal[0]
        alive = client.get("/healthz")
        assert alive.status_code == 503 and "no memory" in alive.json()["detail"]
        assert client.get("/readyz").status_code == 503
        refused = client.post("/v1/answer", json={"question": "Capital of France?"})
        assert refused.status_code == 503 and "no memory" in refused.json()["error"]["message"]
