"""The remote engine's health check survives a stale keep-alive connection (the server closed it as the check reused
it: a race no real server causes on demand, so a transport stands in for it), and still fails on a dead server."""

from __future__ import annotations

import httpx
import pytest

from sem.engines.openai import OpenAIEngine
from sem.errors import EngineError


def engine(failures: int) -> tuple[OpenAIEngine, list[int]]:
    calls: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) <= failures:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return httpx.Response(200, json={"data": [{"id": "smol"}]})

    client = httpx.AsyncClient(base_url="http://remote", transport=httpx.MockTransport(handle))
    return OpenAIEngine("http://remote", "smol", tokenizer=None, client=client), calls


async def test_one_dropped_keep_alive_is_retried() -> None:
    remote, calls = engine(failures=1)
    await remote.check_health()
    assert len(calls) == 2


async def test_a_server_that_keeps_dropping_is_unhealthy() -> None:
    remote, calls = engine(failures=5)
    with pytest.raises(EngineError, match="not reachable"):
        await remote.check_health()
    assert len(calls) == 2
