"""What the sync and async clients share: configuration, request building, retry decisions, error mapping."""

from __future__ import annotations

import os
import random
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from sem_client._version import __version__
from sem_client.errors import APIConnectionError, APITimeoutError, status_error

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=5.0)
DEFAULT_MAX_RETRIES = 2
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})


class BaseClient:
    def __init__(
        self,
        base_url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        base = base_url or os.environ.get("SEM_BASE_URL") or DEFAULT_BASE_URL
        # Accept both the server root and an OpenAI-style ".../v1" base URL.
        self.base_url = base.rstrip("/").removesuffix("/v1")
        self.api_key = api_key if api_key is not None else os.environ.get("SEM_API_KEY")
        self.timeout = timeout if isinstance(timeout, httpx.Timeout) else (
            httpx.Timeout(timeout) if timeout is not None else DEFAULT_TIMEOUT
        )  # fmt: skip
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.max_retries = max_retries

    def _headers(self) -> dict[str, str]:
        headers = {"accept": "application/json", "user-agent": f"sem-client/{__version__}"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    def _retry_delay_or_raise(
        self,
        attempt: int,
        request: httpx.Request,
        *,
        exc: httpx.TransportError | None = None,
        response: httpx.Response | None = None,
    ) -> float:
        """The wait before the next attempt, or the exception this failed attempt ends the call with."""
        if exc is not None:
            if attempt < self.max_retries:
                return self._retry_delay(attempt, None)
            if isinstance(exc, httpx.TimeoutException):
                raise APITimeoutError(f"request timed out: {exc}", request=request) from exc
            raise APIConnectionError(f"could not reach {self.base_url}: {exc}", request=request) from exc
        assert response is not None
        if attempt < self.max_retries and self._should_retry(response):
            return self._retry_delay(attempt, response)
        raise status_error(response)

    @staticmethod
    def _should_retry(response: httpx.Response) -> bool:
        override = response.headers.get("x-should-retry")
        if override in ("true", "false"):
            return override == "true"
        return response.status_code in RETRYABLE_STATUS

    @staticmethod
    def _retry_delay(attempt: int, response: httpx.Response | None) -> float:
        """Honour Retry-After (seconds or an HTTP date) up to a cap, else exponential backoff with jitter."""
        if response is not None:
            header = response.headers.get("retry-after")
            if header:
                try:
                    seconds = float(header)
                except ValueError:
                    try:
                        seconds = parsedate_to_datetime(header).timestamp() - time.time()
                    except (TypeError, ValueError):
                        seconds = -1
                if 0 <= seconds <= 60:
                    return seconds
        delay = min(INITIAL_RETRY_DELAY * 2**attempt, MAX_RETRY_DELAY)
        return delay * (1 - 0.25 * random.random())


def drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def answer_payload(question: str, **options: Any) -> dict[str, Any]:
    return drop_none({"question": question, **options})


def chat_payload(
    messages: list[dict[str, Any]] | str,
    *,
    model: str | None,
    stream: bool,
    search: str | None,
    max_searches: int | None,
    top_k: int | None,
    include_usage: bool,
    search_mode: str | None = None,
    search_domains: dict[str, list[str]] | None = None,
    search_rate: float | None = None,
    **options: Any,
) -> dict[str, Any]:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    payload = drop_none({"model": model, "messages": messages, "stream": stream or None, **options})
    sem = drop_none({"search": search, "max_searches": max_searches, "top_k": top_k, "search_mode": search_mode,
                     "search_domains": search_domains, "search_rate": search_rate})  # fmt: skip
    if sem:
        payload["sem"] = sem
    if stream and include_usage:
        payload["stream_options"] = {"include_usage": True}
    return payload
