"""FastAPI dependencies as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.state import ServiceState


def get_state(request: Request) -> ServiceState:
    return request.app.state.sem


StateDep = Annotated[ServiceState, Depends(get_state)]


async def guard(request: Request, state: StateDep) -> None:
    """API key (when auth is on) and the per-key rate limit, before any work is done."""
    client = request.client.host if request.client else "unknown"
    principal = await state.security.authenticate(request.headers.get("authorization"), client)
    request.state.principal = principal  # what the search budget counts against (service.budget)
    await state.security.check_rate(principal)


Guarded = [Depends(guard)]
