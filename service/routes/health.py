"""Liveness, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.deps import Guarded, StateDep
from service.schemas import Health, Stats

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz(state: StateDep) -> Health:
    """The process is up (it may still be loading)."""
    status = "ok" if state.ready else ("error" if state.error else "loading")
    return Health(status=status, detail=state.error)


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(state: StateDep) -> JSONResponse:
    """Ready once the engine and the search index are loaded; 503 before (or if loading failed)."""
    if not state.ready or state.engine is None or state.search is None:
        status = "error" if state.error else "loading"
        body = Health(status=status, detail=state.error or "loading the model and the search index")
        return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "5"})
    body = Health(
        status="ok",
        model=state.model_name,
        engine=state.engine.name,
        search_backend=state.search.name,
        cache=state.search.store.name,
    )
    return JSONResponse(body.model_dump())


@router.get("/metrics")
async def metrics(state: StateDep) -> Response:
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/stats", response_model=Stats, dependencies=Guarded)
async def stats(state: StateDep) -> Stats:
    """Answers, searches per answer, cache hit rate and mean latency since the service started."""
    return Stats(**state.metrics.summary())
