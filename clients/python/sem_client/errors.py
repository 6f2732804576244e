"""The SDK's exceptions, shaped like openai-python's: status errors carry the status, body and request id."""

from __future__ import annotations

from typing import Any

import httpx


class SemError(Exception):
    """Base of every exception the SDK raises."""


class APIError(SemError):
    def __init__(self, message: str, *, body: Any = None, request: httpx.Request | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.body = body
        self.request = request
        error = body.get("error") if isinstance(body, dict) else None
        self.type: str | None = error.get("type") if isinstance(error, dict) else None
        self.param: str | None = error.get("param") if isinstance(error, dict) else None
        self.code: str | None = error.get("code") if isinstance(error, dict) else None


class APIConnectionError(APIError):
    """The server could not be reached."""


class APITimeoutError(APIConnectionError):
    """The request took longer than the timeout."""


class APIStatusError(APIError):
    """The server answered with a 4xx or 5xx status."""

    def __init__(self, message: str, *, response: httpx.Response, body: Any = None) -> None:
        super().__init__(message, body=body, request=response.request)
        self.response = response
        self.status_code = response.status_code
        self.request_id = response.headers.get("x-request-id")


class BadRequestError(APIStatusError): ...


class AuthenticationError(APIStatusError): ...


class PermissionDeniedError(APIStatusError): ...


class NotFoundError(APIStatusError): ...


class UnprocessableEntityError(APIStatusError): ...


class RateLimitError(APIStatusError): ...


class InternalServerError(APIStatusError): ...


class ServiceUnavailableError(InternalServerError): ...


class StreamError(APIError):
    """The server reported an error in the middle of a stream."""


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    422: UnprocessableEntityError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def status_error(response: httpx.Response) -> APIStatusError:
    """The exception for an error response, with the server's message when it sent OpenAI's error object."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text or None
    message = f"HTTP {response.status_code}"
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = f"{message}: {body['error'].get('message')}"
    elif isinstance(body, str) and body:
        message = f"{message}: {body[:200]}"
    cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = InternalServerError if response.status_code >= 500 else APIStatusError
    return cls(message, response=response, body=body)
