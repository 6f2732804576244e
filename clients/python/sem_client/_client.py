"""`SemClient` and `AsyncSemClient`: httpx clients with retries, typed responses and streaming."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, overload

import httpx

from sem_client._base import BaseClient, answer_payload, chat_payload
from sem_client._streaming import AsyncStream, Stream
from sem_client._tools import MAX_ROUNDS, SEARCH_TOOL, pending_call, too_many_rounds, tool_message
from sem_client.types import Answer, ChatCompletion, Model, SearchPolicy


class SemClient(BaseClient):
    """Synchronous client.

    >>> with SemClient("http://127.0.0.1:8000") as sem:  # doctest: +SKIP
    ...     print(sem.answer("Who wrote Hamlet?").search_count)
    """

    def __init__(self, base_url: str | None = None, *, http_client: httpx.Client | None = None, **kwargs: Any) -> None:
        super().__init__(base_url, **kwargs)
        self._http = http_client or httpx.Client(base_url=self.base_url, timeout=self.timeout)

    def answer(
        self,
        question: str,
        *,
        search: SearchPolicy | None = None,
        max_searches: int | None = None,
        top_k: int | None = None,
        search_mode: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        return_trace: bool | None = None,
        search_domains: dict[str, list[str]] | None = None,
        search_rate: float | None = None,
        model: str | None = None,
    ) -> Answer:
        """`POST /v1/answer`: one answer and the searches it took. `model`: a served model's name (`models()`; default:
        the server's default). `search_rate`: search that share of questions, the least sure (the `confidence` gate).
        `search_domains`: `{"allow": [...], "block": [...]}`, narrowing where the deployment's search may look."""
        payload = answer_payload(
            question, search=search, max_searches=max_searches, top_k=top_k, search_mode=search_mode,
            max_tokens=max_tokens, temperature=temperature, seed=seed, return_trace=return_trace,
            search_domains=search_domains, search_rate=search_rate, model=model,
        )  # fmt: skip
        return Answer.model_validate(self._send("POST", "/v1/answer", payload).json())

    @overload
    def chat(
        self, messages: list[dict[str, Any]] | str, *, stream: Literal[False] = ..., **kw: Any
    ) -> ChatCompletion: ...

    @overload
    def chat(self, messages: list[dict[str, Any]] | str, *, stream: Literal[True], **kw: Any) -> Stream: ...

    def chat(
        self,
        messages: list[dict[str, Any]] | str,
        *,
        model: str | None = None,
        stream: bool = False,
        search: SearchPolicy | None = None,
        max_searches: int | None = None,
        top_k: int | None = None,
        search_mode: str | None = None,
        search_domains: dict[str, list[str]] | None = None,
        search_rate: float | None = None,
        include_usage: bool = True,
        **options: Any,
    ) -> ChatCompletion | Stream:
        """`POST /v1/chat/completions`; `stream=True` gives an iterator of chunks. `model`: the served one."""
        payload = chat_payload(
            messages, model=model or self.default_model(), stream=stream, search=search,
            max_searches=max_searches, top_k=top_k, search_mode=search_mode, search_domains=search_domains,
            search_rate=search_rate, include_usage=include_usage, **options,
        )  # fmt: skip
        if stream:
            return Stream(self._send("POST", "/v1/chat/completions", payload, stream=True))
        return ChatCompletion.model_validate(self._send("POST", "/v1/chat/completions", payload).json())

    def answer_with(
        self,
        question: str | list[dict[str, Any]],
        search_fn: Callable[[str], str | Sequence[Any]],
        *,
        tool_choice: Literal["auto", "required", "none"] = "auto",
        max_searches: int | None = None,
        **options: Any,
    ) -> ChatCompletion:
        """Answer with your own search: the model decides whether to search, `search_fn(query)` searches (a
        string, or a list of passages: strings or dicts with `title` / `text`). Returns the final completion;
        `usage.num_search_queries` counts the searches of every round."""
        messages = [{"role": "user", "content": question}] if isinstance(question, str) else list(question)
        for _ in range(MAX_ROUNDS + 1):
            completion = self.chat(messages, tools=[SEARCH_TOOL], tool_choice=tool_choice,
                                   max_searches=max_searches, **options)  # fmt: skip
            call = pending_call(completion)
            if call is None:
                return completion
            assistant, call_id, query = call
            messages += [assistant, tool_message(call_id, search_fn(query))]
        raise too_many_rounds()

    def models(self) -> list[Model]:
        return [Model.model_validate(m) for m in self._send("GET", "/v1/models").json()["data"]]

    def default_model(self) -> str:
        if not hasattr(self, "_model"):
            self._model = self.models()[0].id
        return self._model

    def health(self) -> dict[str, Any]:
        """`GET /readyz` (503 while loading raises ServiceUnavailableError after the retries)."""
        return self._send("GET", "/readyz").json()

    def _send(self, method: str, path: str, json: Any = None, *, stream: bool = False) -> httpx.Response:
        request = self._http.build_request(method, path, json=json, headers=self._headers())
        attempt = 0
        while True:
            try:
                response = self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                time.sleep(self._retry_delay_or_raise(attempt, request, exc=exc))
                attempt += 1
                continue
            if response.is_success:
                return response
            response.read()
            response.close()
            time.sleep(self._retry_delay_or_raise(attempt, request, response=response))
            attempt += 1

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SemClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSemClient(BaseClient):
    """Asynchronous client; the same methods, awaited."""

    def __init__(
        self, base_url: str | None = None, *, http_client: httpx.AsyncClient | None = None, **kwargs: Any
    ) -> None:
        super().__init__(base_url, **kwargs)
        self._http = http_client or httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout)

    async def answer(
        self,
        question: str,
        *,
        search: SearchPolicy | None = None,
        max_searches: int | None = None,
        top_k: int | None = None,
        search_mode: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        return_trace: bool | None = None,
        search_domains: dict[str, list[str]] | None = None,
        search_rate: float | None = None,
        model: str | None = None,
    ) -> Answer:
        payload = answer_payload(
            question, search=search, max_searches=max_searches, top_k=top_k, search_mode=search_mode,
            max_tokens=max_tokens, temperature=temperature, seed=seed, return_trace=return_trace,
            search_domains=search_domains, search_rate=search_rate, model=model,
        )  # fmt: skip
        return Answer.model_validate((await self._send("POST", "/v1/answer", payload)).json())

    async def chat(
        self,
        messages: list[dict[str, Any]] | str,
        *,
        model: str | None = None,
        stream: bool = False,
        search: SearchPolicy | None = None,
        max_searches: int | None = None,
        top_k: int | None = None,
        search_mode: str | None = None,
        search_domains: dict[str, list[str]] | None = None,
        search_rate: float | None = None,
        include_usage: bool = True,
        **options: Any,
    ) -> ChatCompletion | AsyncStream:
        payload = chat_payload(
            messages, model=model or await self.default_model(), stream=stream, search=search,
            max_searches=max_searches, top_k=top_k, search_mode=search_mode, search_domains=search_domains,
            search_rate=search_rate, include_usage=include_usage, **options,
        )  # fmt: skip
        if stream:
            return AsyncStream(await self._send("POST", "/v1/chat/completions", payload, stream=True))
        return ChatCompletion.model_validate((await self._send("POST", "/v1/chat/completions", payload)).json())

    async def answer_with(
        self,
        question: str | list[dict[str, Any]],
        search_fn: Callable[[str], str | Sequence[Any] | Awaitable[str | Sequence[Any]]],
        *,
        tool_choice: Literal["auto", "required", "none"] = "auto",
        max_searches: int | None = None,
        **options: Any,
    ) -> ChatCompletion:
        """`SemClient.answer_with`, awaited; `search_fn` may be a coroutine function."""
        messages = [{"role": "user", "content": question}] if isinstance(question, str) else list(question)
        for _ in range(MAX_ROUNDS + 1):
            completion = await self.chat(messages, tools=[SEARCH_TOOL], tool_choice=tool_choice,
                                         max_searches=max_searches, **options)  # fmt: skip
            call = pending_call(completion)  # type: ignore[arg-type]
            if call is None:
                return completion  # type: ignore[return-value]
            assistant, call_id, query = call
            found = search_fn(query)
            messages += [assistant, tool_message(call_id, await found if inspect.isawaitable(found) else found)]
        raise too_many_rounds()

    async def models(self) -> list[Model]:
        return [Model.model_validate(m) for m in (await self._send("GET", "/v1/models")).json()["data"]]

    async def default_model(self) -> str:
        if not hasattr(self, "_model"):
            self._model = (await self.models())[0].id
        return self._model

    async def health(self) -> dict[str, Any]:
        return (await self._send("GET", "/readyz")).json()

    async def _send(self, method: str, path: str, json: Any = None, *, stream: bool = False) -> httpx.Response:
        request = self._http.build_request(method, path, json=json, headers=self._headers())
        attempt = 0
        while True:
            try:
                response = await self._http.send(request, stream=stream)
            except httpx.TransportError as exc:
                await asyncio.sleep(self._retry_delay_or_raise(attempt, request, exc=exc))
                attempt += 1
                continue
            if response.is_success:
                return response
            await response.aread()
            await response.aclose()
            await asyncio.sleep(self._retry_delay_or_raise(attempt, request, response=response))
            attempt += 1

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncSemClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
