"""ASGI middleware: a request id on every request and log line, and a cap on the request body size."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import uuid
from typing import Any

from starlette.exceptions import HTTPException

from service.errors import error_json
from service.exceptions import RequestTooLarge, ShuttingDown

Scope = dict[str, Any]
Receive = Any
Send = Any

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:/=+-]{1,128}$")
log = logging.getLogger(__name__)


class RequestIdMiddleware:
    """Takes `X-Request-Id` from the client when it is sane (else makes one), and returns it on the response."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _SAFE_ID.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        started = False

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # Only the server cancels a request task (a client that leaves cancels the answer, not the task):
            # uvicorn does when the SIGTERM drain deadline passes. Say so instead of uvicorn's bare 500.
            log.warning("request cancelled: the server shut down before it finished (SEM_SHUTDOWN_TIMEOUT_S)")
            if not started:
                reply = error_json(ShuttingDown("the server shut down before this request finished; retry it"))
                await reply(scope, receive, send_with_id)
        finally:
            request_id.reset(token)


class BodyLimitMiddleware:
    """413 (OpenAI's error object) for a body over `max_bytes`, by Content-Length or while it streams in."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await error_json(RequestTooLarge(self.message))(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # a chunked body without Content-Length: stop reading it
                    raise HTTPException(413, self.message)
            return message

        await self.app(scope, counting_receive, send)

    @property
    def message(self) -> str:
        return f"request body is larger than {self.max_bytes} bytes (SEM_LIMITS__MAX_BODY_BYTES)"
