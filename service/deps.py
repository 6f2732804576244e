"""FastAPI dependencies as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.state import ServiceState


def get_state(request: Request) -> ServiceState:
    return request.app.state.sem


StateDep = Annotated[ServiceState, Depends(get_state)]
