"""One place that maps errors to OpenAI's error object: {"error": {message, type, param, code}}."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from sem.errors import ConfigError, EngineError, PromptTooLong, SEMError
from service.admission import DeadlineExceeded, Saturated
from service.schemas import ErrorInfo, ErrorResponse
from service.security import RateLimited, Unauthorized

log = logging.getLogger(__name__)


class NotReadyError(SEMError):
    """The engine or the index is still loading (or failed to load)."""


class InvalidRequest(SEMError):
    """A request that is well typed but cannot be served as asked (400)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class ModelNotFound(SEMError):
    """The request names a model this server does not serve (404)."""


def error_response(
    status: int,
    message: str,
    type_: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
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
    type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return error_response(exc.status_code, str(exc.detail), type_)


async def _not_ready(_: Request, exc: NotReadyError) -> JSONResponse:
    return error_response(503, str(exc), "service_unavailable", code="not_ready")


async def _invalid(_: Request, exc: InvalidRequest) -> JSONResponse:
    return error_response(400, str(exc), "invalid_request_error", param=exc.param)


async def _model_not_found(_: Request, exc: ModelNotFound) -> JSONResponse:
    return error_response(404, str(exc), "invalid_request_error", param="model", code="model_not_found")


async def _engine(_: Request, exc: EngineError) -> JSONResponse:
    log.error("engine error: %s", exc)
    return error_response(503, f"the model engine failed: {exc}", "service_unavailable", code="engine_error")


async def _config(_: Request, exc: ConfigError) -> JSONResponse:
    return error_response(500, str(exc), "server_error", code="config_error")


async def _disconnected(_: Request, exc: Exception) -> JSONResponse:
    # Nobody is listening any more; 499 (nginx's "client closed request") keeps it out of the 5xx error rate.
    return error_response(499, "the client closed the request", "client_closed_request")


async def _unauthorized(_: Request, exc: Exception) -> JSONResponse:
    return error_response(401, str(exc), "invalid_request_error", code="invalid_api_key",
                          headers={"WWW-Authenticate": "Bearer"})  # fmt: skip


async def _rate_limited(_: Request, exc: RateLimited) -> JSONResponse:
    return error_response(429, str(exc), "rate_limit_exceeded", code="rate_limit_exceeded",
                          headers={"Retry-After": str(exc.retry_after_s)})  # fmt: skip


async def _saturated(_: Request, exc: Exception) -> JSONResponse:
    return error_response(503, str(exc), "service_unavailable", code="overloaded", headers={"Retry-After": "1"})


async def _deadline(_: Request, exc: Exception) -> JSONResponse:
    return error_response(504, str(exc), "timeout", code="deadline_exceeded")


async def _prompt_too_long(_: Request, exc: Exception) -> JSONResponse:
    return error_response(400, str(exc), "invalid_request_error", param="messages", code="context_length_exceeded")


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error")
    return error_response(500, f"internal error: {type(exc).__name__}", "server_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(NotReadyError, _not_ready)  # type: ignore[arg-type]
    app.add_exception_handler(InvalidRequest, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(ModelNotFound, _model_not_found)  # type: ignore[arg-type]
    app.add_exception_handler(EngineError, _engine)  # type: ignore[arg-type]
    app.add_exception_handler(ConfigError, _config)  # type: ignore[arg-type]
    from service.cancel import ClientDisconnected

    app.add_exception_handler(ClientDisconnected, _disconnected)
    app.add_exception_handler(Unauthorized, _unauthorized)
    app.add_exception_handler(RateLimited, _rate_limited)  # type: ignore[arg-type]
    app.add_exception_handler(Saturated, _saturated)
    app.add_exception_handler(DeadlineExceeded, _deadline)
    app.add_exception_handler(PromptTooLong, _prompt_too_long)
    app.add_exception_handler(Exception, _unexpected)
