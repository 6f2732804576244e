"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import Guarded, StateDep
from service.protocol import Health, Stats

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz(state: StateDep) -> Health:
    """The process is up (it may still be loading)."""
    status = "ok" if state.ready else ("error" if state.error else "loading")
    return Health(status=status, detail=state.error)


HEALTH_TIMEOUT_S = 5.0


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(state: StateDep) -> JSONResponse:
    """Ready once the engine and the search index are loaded and the engine answers its health check; 503 before
    (or if loading failed, or the engine is unhealthy). A failing search backend is `degraded`, still 200: answers go
    on without results (its check is cached, so probes do not spend a paid web API's queries)."""
    if not state.ready or state.engine is None or state.search is None:
        status = "error" if state.error else "loading"
        body = Health(status=status, detail=state.error or "loading the model and the search index")
        return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "5"})
    names = {"model": state.model_name, "engine": state.engine.name, "search_backend": state.search.name,
             "cache": state.search.store.name}  # fmt: skip
    try:
        await asyncio.wait_for(state.engine.check_health(), HEALTH_TIMEOUT_S)
    except Exception as exc:  # EngineError, a timeout, whatever a remote engine raises
        body = Health(status="error", detail=f"the model engine is unhealthy: {exc or type(exc).__name__}", **names)
        return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "5"})
    problem = await state.search_health(HEALTH_TIMEOUT_S)
    body = Health(status="degraded" if problem else "ok", detail=problem, **names)
    return JSONResponse(body.model_dump())


@router.get("/metrics")
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/stats", response_model=Stats, dependencies=Guarded)
async def stats(state: StateDep) -> Stats:
    """Answers, searches per answer, cache hit rate and mean latency since the service started."""
    return Stats(**state.metrics.summary())
