"""One table from exceptions to HTTP statuses and OpenAI's error object ({"error": {message, type, param, code}}).

The HTTP handlers, the SSE error event of a stream that has already started, and the middleware all read it, so an
error looks the same wherever it surfaces.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sem.errors import ConfigError, EngineError, PromptTooLong, SearchBudgetExhausted
from sem.protocol import TemplateRejected
from service.exceptions import (
    ClientDisconnected,
    DeadlineExceeded,
    InvalidRequest,
    InvalidToolCall,
    ModelNotFound,
    NotReadyError,
    RateLimited,
    RequestTooLarge,
    Saturated,
    ShuttingDown,
    Unauthorized,
)
from service.protocol import ErrorInfo, ErrorResponse

__all__ = ["ERRORS", "InvalidRequest", "ModelNotFound", "NotReadyError", "describe", "install_error_handlers"]
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ErrorKind:
    status: int
    type: str
    code: str | None = None
    param: str | None = None
    message: str = "{exc}"  # formatted with exc= and name= (the exception's class name)
    retry_after_s: int | None = None
    log_level: int = logging.DEBUG


ERRORS: dict[type[BaseException], ErrorKind] = {
    InvalidRequest: ErrorKind(400, "invalid_request_error"),
    InvalidToolCall: ErrorKind(400, "invalid_request_error", "invalid_tool_call"),
    PromptTooLong: ErrorKind(400, "invalid_request_error", "context_length_exceeded", param="messages"),
    TemplateRejected: ErrorKind(400, "invalid_request_error", "chat_template_error", param="messages"),
    Unauthorized: ErrorKind(401, "invalid_request_error", "invalid_api_key"),
    ModelNotFound: ErrorKind(404, "invalid_request_error", "model_not_found", param="model"),
    RequestTooLarge: ErrorKind(413, "invalid_request_error", "request_too_large"),
    RateLimited: ErrorKind(429, "rate_limit_exceeded", "rate_limit_exceeded"),
    SearchBudgetExhausted: ErrorKind(429, "rate_limit_exceeded", "search_budget_exhausted", param="search"),
    # nobody is listening any more; 499 (nginx's "client closed request") keeps it out of the 5xx error rate
    ClientDisconnected: ErrorKind(499, "client_closed_request", message="the client closed the request"),
    ConfigError: ErrorKind(500, "server_error", "config_error", log_level=logging.ERROR),
    NotReadyError: ErrorKind(503, "service_unavailable", "not_ready", retry_after_s=5),
    EngineError: ErrorKind(
        503,
        "service_unavailable",
        "engine_error",
        message="the model engine failed: {exc}",
        retry_after_s=5,
        log_level=logging.ERROR,
    ),
    Saturated: ErrorKind(503, "service_unavailable", "overloaded", retry_after_s=1),
    ShuttingDown: ErrorKind(503, "service_unavailable", "shutting_down", retry_after_s=5),  # the middleware logs it
    DeadlineExceeded: ErrorKind(504, "timeout", "deadline_exceeded", log_level=logging.WARNING),
}
UNEXPECTED = ErrorKind(500, "server_error", message="internal error: {name}", log_level=logging.CRITICAL)


def kind_of(exc: BaseException) -> ErrorKind:
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            return ERRORS[cls]
    return UNEXPECTED


def describe(exc: BaseException) -> tuple[ErrorKind, ErrorResponse, dict[str, str]]:
    """The status, the error object and the headers for an exception (logged at its kind's level)."""
    kind = kind_of(exc)
    if kind is UNEXPECTED:
        log.exception("unhandled error", exc_info=exc)
    else:
        log.log(kind.log_level, "%s: %s", type(exc).__name__, exc)
    message = kind.message.format(exc=exc, name=type(exc).__name__)
    param = getattr(exc, "param", None) or kind.param
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after_s", None) or kind.retry_after_s
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    body = ErrorResponse(error=ErrorInfo(message=message, type=kind.type, param=param, code=kind.code))
    return kind, body, headers


def error_json(exc: BaseException) -> JSONResponse:
    kind, body, headers = describe(exc)
    return JSONResponse(body.model_dump(), status_code=kind.status, headers=headers or None)


def error_response(status: int, message: str, type_: str, *, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    """An error the framework raised itself (validation, routing), in the same shape."""
    body = ErrorResponse(error=ErrorInfo(message=message, type=type_, param=param, code=code))
    if status == 503 and not headers:
        headers = {"Retry-After": "5"}
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _field_of(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    field = _field_of(tuple(first.get("loc", ())))
    message = "; ".join(f"{_field_of(tuple(e.get('loc', ())))}: {e.get('msg')}" for e in errors[:5])
    return error_response(422, message, "invalid_request_error", param=field, code=str(first.get("type")))


async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 413:  # the body limit tripped while the body streamed in
        return error_json(RequestTooLarge(str(exc.detail)))
    type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return error_response(exc.status_code, str(exc.detail), type_)


async def _from_table(_: Request, exc: Exception) -> JSONResponse:
    return error_json(exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    for exc_type in ERRORS:
        app.add_exception_handler(exc_type, _from_table)
    app.add_exception_handler(Exception, _from_table)
