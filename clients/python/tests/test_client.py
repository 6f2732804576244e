"""The SDK offline, over httpx.MockTransport (and a local port that never answers, for the timeout): error mapping,
retries, timeouts, SSE decoding."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import sem_client
from sem_client import (
    APIConnectionError,
    APITimeoutError,
    AsyncSemClient,
    BadRequestError,
    NotFoundError,
    RateLimitError,
    SemClient,
    ServiceUnavailableError,
    StreamError,
    UnprocessableEntityError,
)
from sem_client._streaming import SSEDecoder

ANSWER = {
    "id": "ans-1",
    "model": "m",
    "answer": "Shakespeare",
    "search_count": 1,
    "searches": [{"query": "q", "passages": [{"id": "1", "title": "Hamlet", "text": "t"}], "cached": False}],
    "finish_reason": "stop",
    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5, "num_search_queries": 1},
}


def error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None, **headers):
    body = {"error": {"message": message, "type": type_, "param": param, "code": None}}
    return httpx.Response(status, json=body, headers=headers)


def client_with(handler, **kwargs) -> SemClient:
    transport = httpx.MockTransport(handler)
    http = httpx.Client(base_url="http://sem.test", transport=transport)
    return SemClient("http://sem.test", http_client=http, **kwargs)


@pytest.mark.parametrize(
    ("status", "exc"),
    [(400, BadRequestError), (404, NotFoundError), (422, UnprocessableEntityError), (429, RateLimitError),
     (503, ServiceUnavailableError)],
)  # fmt: skip
def test_status_maps_to_exception_with_the_server_message(status: int, exc: type) -> None:
    client = client_with(lambda r: error(status, "question: too long", param="question"), max_retries=0)
    with pytest.raises(exc) as info:
        client.answer("q")
    assert info.value.status_code == status
    assert "question: too long" in str(info.value) and info.value.param == "question"


def test_retries_503_then_succeeds_honouring_retry_after() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) < 3:
            return error(503, "loading", "service_unavailable", **{"retry-after": "0"})
        return httpx.Response(200, json=ANSWER)

    result = client_with(handler, max_retries=2).answer("Who wrote Hamlet?", search="always")
    assert result.answer == "Shakespeare" and result.searches[0].passages[0].title == "Hamlet"
    assert len(calls) == 3
    assert json.loads(calls[0].content) == {"question": "Who wrote Hamlet?", "search": "always"}


def test_gives_up_after_max_retries() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return error(429, "slow down", "rate_limit_error", **{"retry-after": "0"})

    with pytest.raises(RateLimitError):
        client_with(handler, max_retries=1).answer("q")
    assert len(calls) == 2


def test_no_retry_on_client_errors() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return error(422, "question: must not be blank")

    with pytest.raises(UnprocessableEntityError):
        client_with(handler, max_retries=3).answer(" ")
    assert len(calls) == 1


def test_timeouts_and_connection_errors() -> None:
    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(APITimeoutError):
        client_with(timeout, max_retries=0).answer("q")
    with pytest.raises(APIConnectionError):
        client_with(refused, max_retries=0).answer("q")


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A real port that takes connections (the kernel's listen backlog) and never answers a request."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}"


TIMEOUT_GIVEN = {"connect": 0.2, "read": 0.2, "write": 0.2, "pool": 0.2}


def test_a_server_that_never_answers_times_out_after_the_timeout_given(silent_url: str) -> None:
    started = time.monotonic()
    with SemClient(silent_url, timeout=0.2, max_retries=0) as client, pytest.raises(APITimeoutError) as info:
        client.answer("Who wrote Hamlet?")
    assert time.monotonic() - started >= 0.2  # not before the timeout
    assert info.value.request.extensions["timeout"] == TIMEOUT_GIVEN  # its own timeout, not the 120 s default
    assert "timed out" in str(info.value)


async def test_the_async_client_times_out_after_the_timeout_given(silent_url: str) -> None:
    started = time.monotonic()
    async with AsyncSemClient(silent_url, timeout=0.2, max_retries=0) as client:
        with pytest.raises(APITimeoutError) as info:
            await client.answer("Who wrote Hamlet?")
    assert time.monotonic() - started >= 0.2
    assert info.value.request.extensions["timeout"] == TIMEOUT_GIVEN


def test_api_key_from_argument_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json=ANSWER)

    client_with(handler, api_key="k1").answer("q")
    monkeypatch.setenv("SEM_API_KEY", "k2")
    client_with(handler).answer("q")
    assert seen == ["Bearer k1", "Bearer k2"]


def sse(*events: object) -> bytes:
    lines = []
    for event in events:
        lines.append(f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n")
    return "".join(lines).encode()


CHUNK = {"id": "c", "model": "m", "created": 1, "choices": [{"index": 0, "delta": {"content": "Hi"}}]}


def test_stream_stops_at_done_and_raises_on_error_events() -> None:
    def ok(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
        return httpx.Response(200, content=sse(CHUNK, CHUNK, "[DONE]", CHUNK))

    chunks = list(client_with(ok).chat("hi", model="m", stream=True))
    assert [c.choices[0].delta.content for c in chunks] == ["Hi", "Hi"]

    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=sse(CHUNK, {"error": {"message": "engine died"}}, "[DONE]"))

    with pytest.raises(StreamError, match="engine died"):
        list(client_with(broken).chat("hi", model="m", stream=True))


def test_sse_decoder_follows_the_spec() -> None:
    decoder = SSEDecoder()
    lines = [": keep-alive", "event: chunk", "id: 7", "data: a", "data:b", "", "", "data: c", ""]
    events = [e for e in (decoder.feed(line) for line in lines) if e]
    assert [(e.event, e.id, e.data) for e in events] == [("chunk", "7", "a\nb"), (None, "7", "c")]


async def test_async_client_retries_and_streams() -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "served"}]})
        if len(calls) == 2:
            return error(503, "busy", "service_unavailable", **{"retry-after": "0"})
        body = json.loads(request.content)
        assert body["model"] == "served"
        return httpx.Response(200, content=sse(CHUNK, "[DONE]"))

    http = httpx.AsyncClient(base_url="http://sem.test", transport=httpx.MockTransport(handler))
    async with AsyncSemClient("http://sem.test/v1", http_client=http) as client:
        stream = await client.chat([{"role": "user", "content": "hi"}], stream=True)
        chunks = [c async for c in stream]
    assert len(chunks) == 1 and calls == ["/v1/models", "/v1/chat/completions", "/v1/chat/completions"]


def test_package_imports_nothing_of_the_server() -> None:
    import subprocess
    import sys

    code = "import sem_client, sys; print(sorted(m for m in sys.modules if m.split('.')[0] in ('sem', 'service')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert sem_client.__version__


def test_citations_are_typed() -> None:
    cited = {"passage_id": "1", "title": "Hamlet", "search": 0, "rank": 1, "start": 0, "end": 11,
             "quote": "Shakespeare", "quote_start": 10, "quote_end": 21}  # fmt: skip
    answer = client_with(lambda r: httpx.Response(200, json={**ANSWER, "citations": [cited]})).answer("q")
    assert answer.citations[0].quote == "Shakespeare" and answer.citations[0].url is None
    note = {"type": "url_citation", "url_citation": {"start_index": 0, "end_index": 11, "url": "1", "title": "Hamlet"}}
    completion = sem_client.ChatCompletion.model_validate(
        {"id": "c", "model": "m", "created": 0, "usage": ANSWER["usage"],
         "choices": [{"message": {"role": "assistant", "content": "Shakespeare", "annotations": [note]}}]}
    )  # fmt: skip
    assert completion.choices[0].message.annotations[0].url_citation.title == "Hamlet"


def test_source_filters_are_sent_and_an_exhausted_budget_is_read() -> None:
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        if request.url.path == "/v1/answer":
            return httpx.Response(
                200, json={**ANSWER, "search_count": 0, "searches": [], "search_budget_exhausted": True}
            )
        return httpx.Response(200, json={"id": "c", "model": "m", "created": 0, "usage": ANSWER["usage"],
                                         "choices": [{"message": {"role": "assistant", "content": "x"}}],
                                         "sem": {"search_budget_exhausted": True}})  # fmt: skip

    client = client_with(handler)
    domains = {"allow": ["en.wikipedia.org"], "block": ["example.com"]}
    answer = client.answer("q", search_domains=domains)
    completion = client.chat("q", model="m", search_domains={"block": ["example.com"]})
    assert sent[0]["search_domains"] == domains and sent[1]["sem"] == {"search_domains": {"block": ["example.com"]}}
    assert answer.search_budget_exhausted and completion.sem.search_budget_exhausted
    client.chat("q", model="m")
    assert "sem" not in sent[-1]  # nothing sent when unset


def test_a_search_rate_is_sent_to_both_apis() -> None:
    sent = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content))
        if request.url.path == "/v1/answer":
            return httpx.Response(200, json={**ANSWER, "search_count": 0, "searches": [], "confidence": 0.93})
        return httpx.Response(200, json={"id": "c", "model": "m", "created": 0, "usage": ANSWER["usage"],
                                         "choices": [{"message": {"role": "assistant", "content": "x"}}]})  # fmt: skip

    client = client_with(handler)
    answer = client.answer("q", search_rate=0.3)
    client.chat("q", model="m", search_rate=0.25)
    assert sent[0]["search_rate"] == 0.3 and sent[1]["sem"] == {"search_rate": 0.25}
    assert answer.confidence == 0.93
