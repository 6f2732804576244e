"""Every exception the service raises on its own (the core's are in `sem.errors`); `service.errors` maps them all
to HTTP statuses and OpenAI error objects in one table."""

from __future__ import annotations

from sem.errors import SEMError


class NotReadyError(SEMError):
    """The engine or the index is still loading (or failed to load) (503)."""


class InvalidRequest(SEMError):
    """A request that is well typed but cannot be served as asked (400)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidToolCall(InvalidRequest):
    """Tools or tool messages that do not make a search round SEM can continue from (400)."""


class ModelNotFound(SEMError):
    """The request names a model this server does not serve (404)."""


class RequestTooLarge(SEMError):
    """The body is over `SEM_LIMITS__MAX_BODY_BYTES` (413)."""


class Unauthorized(SEMError):
    """No key, or a key that is not accepted (401)."""


class RateLimited(SEMError):
    """Over the rate limit of its window (429)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Saturated(SEMError):
    """Every slot is busy and the queue is full (503)."""


class DeadlineExceeded(SEMError):
    """The answer took longer than the request deadline (504)."""


class ShuttingDown(SEMError):
    """The server stopped before the request finished (503)."""


class ClientDisconnected(Exception):
    """The client went away; its generation was cancelled (499, logged only: nobody reads it)."""
