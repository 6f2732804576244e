"""Cancel work whose client has gone away (non-streaming requests; streaming ones are cancelled by Starlette)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from service.exceptions import ClientDisconnected

__all__ = ["ClientDisconnected", "run_until_disconnect"]
T = TypeVar("T")


async def run_until_disconnect(work: Awaitable[T], request: Request) -> T:
    """Run the work, cancelling it (and so the engine request) if the client disconnects first."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()  # the server is stopping (its drain deadline passed): stop the answer with the request
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    raise ClientDisconnected()
