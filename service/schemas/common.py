"""Wire models shared by every route: errors and health."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


class Health(BaseModel):
    status: Literal["ok", "loading", "error"]
    model: str | None = None
    engine: str | None = None
    search_backend: str | None = None
    cache: str | None = None
    detail: str | None = None
