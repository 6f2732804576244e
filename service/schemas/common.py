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


class Stats(BaseModel):
    """`GET /v1/stats`: the service's counters since start, for dashboards and the playground."""

    answers: int
    answers_by_policy: dict[str, int]
    searches: int
    searches_per_answer: float | None
    search_errors: int
    cache_hits: int
    cache_misses: int
    cache_hit_rate: float | None
    mean_latency_ms: float | None
