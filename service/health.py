"""Liveness, readiness and metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sem.engines.supervisor import EngineState
from service.deps import Guarded, StateDep
from service.protocol import Health, Stats

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
async def healthz(state: StateDep) -> JSONResponse:
    """Liveness: 200 while the service can serve or recover (loading, ready, or restarting its engine); 503 once it
    cannot (start-up failed, the engine could not be brought back), so a liveness probe restarts it."""
    if state.fatal:
        body = Health(status="error", detail=state.fatal)
        return JSONResponse(body.model_dump(), status_code=503)
    engine_state = getattr(state.engine, "state", None)
    if state.ready:
        status, detail = "ok", None
    elif engine_state is EngineState.restarting:
        status, detail = "restarting", f"the model engine died ({state.engine.reason}); restarting it"  # type: ignore[union-attr]
    else:
        status, detail = ("error", state.error) if state.error else ("loading", None)
    return JSONResponse(Health(status=status, detail=detail).model_dump())


HEALTH_TIMEOUT_S = 5.0


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(state: StateDep) -> JSONResponse:
    """Ready once the engine and the search index are loaded and the engine answers its health check; 503 before
    (or if loading failed, or the engine is unhealthy). A failing search backend is `degraded`, still 200: answers go
    on without results (its check is cached, so probes do not spend a paid web API's queries)."""
    if not state.ready or state.engine is None or state.search is None:
        engine_state = getattr(state.engine, "state", None)
        if state.loop is not None and engine_state is not None:  # loaded once: the engine is down
            status, detail = "restarting", f"the model engine is {engine_state.value}: {state.engine.reason}"  # type: ignore[union-attr]
        else:
            status = "error" if state.error else "loading"
            detail = state.fatal or state.error or "loading the model and the search index"
        body = Health(status=status, detail=detail)
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
