"""The SDK against the real service (every method, streaming) and a real server that answers 503 first (its timeout is
checked offline, in clients/python/tests)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from sem_client import AsyncSemClient, SemClient, ServiceUnavailableError, UnprocessableEntityError

from tests.conftest import free_port


@pytest.fixture(scope="module")
def sdk(service: str) -> Iterator[SemClient]:
    with SemClient(service) as client:
        yield client


def test_answer_health_and_models(sdk: SemClient) -> None:
    assert sdk.health()["status"] == "ok"
    assert sdk.models()[0].id == sdk.default_model()
    result = sdk.answer("Who wrote Hamlet?", search="always", return_trace=True)
    assert result.search_count == 1 and result.usage.num_search_queries == 1
    assert result.searches[0].passages[0].title == "Hamlet"
    assert result.trace is not None and "[1] Hamlet" in result.trace.text


def test_chat_and_stream(sdk: SemClient) -> None:
    completion = sdk.chat("Who wrote Hamlet?", search="always", max_tokens=40)
    assert completion.content and completion.usage.num_search_queries == 1
    with sdk.chat("Who wrote Hamlet?", search="always", max_tokens=40, stream=True) as stream:
        chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.num_search_queries == 1
    assert any(c.search_results for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def test_async_client(service: str) -> None:
    async with AsyncSemClient(service) as client:
        result = await client.answer("What is the Moon?", search="never", max_tokens=24)
        stream = await client.chat("What is the Moon?", search="always", max_tokens=24, stream=True)
        chunks = [c async for c in stream]
    assert result.search_count == 0
    assert chunks[-1].usage is not None and chunks[-1].usage.num_search_queries == 1


def test_bad_input_raises_with_the_field(sdk: SemClient) -> None:
    with pytest.raises(UnprocessableEntityError) as info:
        sdk.answer("q", max_searches=-1)
    assert info.value.status_code == 422 and info.value.param == "max_searches"


class FlakyApp:
    """A real ASGI server that answers 503 (Retry-After: 0) a set number of times, then 200."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        self.calls += 1
        if self.calls <= self.failures:
            status, body = 503, b'{"error": {"message": "loading", "type": "service_unavailable"}}'
            headers = [(b"content-type", b"application/json"), (b"retry-after", b"0")]
        else:
            status, body = (
                200,
                (
                    b'{"id": "a", "model": "m", "answer": "ok", "search_count": 0, "finish_reason": "stop",'
                    b' "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}'
                ),
            )
            headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def flaky() -> Iterator[tuple[str, FlakyApp]]:
    app = FlakyApp(failures=2)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(timeout=5)


def test_retry_on_a_server_that_answers_503_then_200(flaky: tuple[str, FlakyApp]) -> None:
    url, app = flaky
    with SemClient(url, max_retries=2) as client:
        assert client.answer("q").answer == "ok"
    assert app.calls == 3


def test_retries_exhausted(flaky: tuple[str, FlakyApp]) -> None:
    url, app = flaky
    with SemClient(url, max_retries=1) as client, pytest.raises(ServiceUnavailableError):
        client.answer("q")
    assert app.calls == 2
