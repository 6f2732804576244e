"""`create_app(settings)`: the FastAPI app. The lifespan loads the engine and index in the background, so
`/healthz` answers at once and `/readyz` turns 200 when loading is done."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from sem import __version__
from sem.engines import Engine
from sem.engines.supervisor import EngineFactory
from sem.settings import Settings
from service import budget, health
from service.answer import router as answer
from service.deps import Guarded
from service.errors import install_error_handlers
from service.middleware import BodyLimitMiddleware, RequestIdMiddleware
from service.openai import router as openai
from service.responses import router as responses
from service.state import ServiceState

STATIC = Path(__file__).parent / "static"
DEFAULT_EXAMPLES = [
    {"question": "What is the capital of France?", "note": "one a small model knows"},
    {"question": "Who wrote the novel Middlemarch?", "note": "one it may have to look up"},
]


def playground_examples(path: Path | None) -> list[dict[str, str]]:
    """The examples file's {question, note} rows; read when the app is made, so a bad file stops the start."""
    if path is None:
        return DEFAULT_EXAMPLES
    rows = json.loads(path.read_text())
    if not isinstance(rows, list) or not all(isinstance(r, dict) and r.get("question") for r in rows):
        raise ValueError(f"SEM_EXAMPLES ({path}): expected a JSON list of {{question, note}} objects")
    return [{"question": str(r["question"]), "note": str(r.get("note", ""))} for r in rows]


def create_app(
    settings: Settings | None = None,
    *,
    engine: Engine | None = None,
    on_fatal: Callable[[str], None] | None = None,
    engine_factory: EngineFactory | None = None,
) -> FastAPI:
    """Build the app.

    Args:
        engine: an already started engine to share (it is then neither supervised nor closed here).
        on_fatal: called with the reason once the service cannot serve and will not recover (sem-serve exits).
        engine_factory: how the supervised engine is started (default: the one the settings name).
    """
    state = ServiceState(settings or Settings(), engine=engine, on_fatal=on_fatal, engine_factory=engine_factory)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(state.start())
        app.state.loading = loading
        try:
            yield
        finally:
            loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loading
            await state.aclose()

    app = FastAPI(
        title="SEM",
        version=__version__,
        summary="A search-efficient LLM: it searches only when it needs to.",
        lifespan=lifespan,
    )
    app.state.sem = state
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=state.settings.limits.max_body_bytes)
    app.add_middleware(budget.BudgetHeadersMiddleware)  # what is left of the search budget, on every answer
    app.add_middleware(RequestIdMiddleware)  # outermost: every log line of the request carries its id
    app.include_router(health.router)
    app.include_router(answer.router, dependencies=Guarded)
    app.include_router(openai.router, dependencies=Guarded)
    app.include_router(responses.router, dependencies=Guarded)
    app.include_router(budget.router, dependencies=Guarded)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def playground() -> FileResponse:
        """The playground: ask a question, watch when and why the model searched."""
        return FileResponse(STATIC / "index.html")

    offered = playground_examples(state.settings.examples)

    @app.get("/playground/examples", include_in_schema=False)
    async def examples(model: str | None = None) -> list[dict[str, str]]:
        """The questions the playground offers for a model: its adapter's examples.json (the world's known, unknown
        and changed entities), else SEM_EXAMPLES, else a few real ones."""
        served = state.models.get(model) if state.models is not None and model else None
        return playground_examples(served.examples) if served is not None and served.examples else offered

    return app
