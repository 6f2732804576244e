"""Server-Sent Events: a decoder that follows the spec's line rules, and the typed stream iterators."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from sem_client.errors import StreamError
from sem_client.types import ChatCompletionChunk


@dataclass(slots=True)
class ServerSentEvent:
    data: str
    event: str | None = None
    id: str | None = None


class SSEDecoder:
    """Feed lines (without their line ending); get an event at each blank line that ends one.

    >>> d = SSEDecoder()
    >>> [d.feed(line) for line in ["event: x", "data: a", "data: b", ""]][-1]
    ServerSentEvent(data='a\\nb', event='x', id=None)
    """

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None

    def feed(self, line: str) -> ServerSentEvent | None:
        if not line:
            if not self._data and self._event is None:
                return None
            event = ServerSentEvent("\n".join(self._data), self._event, self._id)
            self._data, self._event = [], None
            return event
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None


def _chunk_of(event: ServerSentEvent, request: httpx.Request) -> ChatCompletionChunk | None:
    """The chunk in an event; None at [DONE]; raises StreamError on an in-band error."""
    if event.data == "[DONE]":
        return None
    payload: Any = json.loads(event.data)
    if isinstance(payload, dict) and "error" in payload:
        error = payload["error"] if isinstance(payload["error"], dict) else {"message": str(payload["error"])}
        raise StreamError(str(error.get("message")), body=payload, request=request)
    return ChatCompletionChunk.model_validate(payload)


class Stream:
    """Iterator over the chunks of a streamed chat completion; also a context manager that closes the response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        decoder = SSEDecoder()
        try:
            for line in self.response.iter_lines():
                event = decoder.feed(line)
                if event is None:
                    continue
                chunk = _chunk_of(event, self.response.request)
                if chunk is None:
                    return
                yield chunk
        finally:
            self.response.close()

    def close(self) -> None:
        self.response.close()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncStream:
    """Async iterator over the chunks of a streamed chat completion."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response

    async def __aiter__(self) -> AsyncIterator[ChatCompletionChunk]:
        decoder = SSEDecoder()
        try:
            async for line in self.response.aiter_lines():
                event = decoder.feed(line)
                if event is None:
                    continue
                chunk = _chunk_of(event, self.response.request)
                if chunk is None:
                    return
                yield chunk
        finally:
            await self.response.aclose()

    async def close(self) -> None:
        await self.response.aclose()

    async def __aenter__(self) -> AsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
