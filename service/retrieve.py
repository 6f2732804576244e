"""`sem-retrieve`: any of our search backends behind Search-R1's `/retrieve` API.

The index then runs on its own machine, shared by several service replicas and by training
(`SEM_SEARCH__BACKEND=retriever SEM_SEARCH__RETRIEVER_URL=http://host:8001`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

import typer
from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from sem.search import SearchBackend, build_backend
from sem.search.base import Passage
from sem.settings import Settings
from service.errors import install_error_handlers
from service.exceptions import NotReadyError


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    queries: list[str] = Field(min_length=1, max_length=256)
    topk: int = Field(3, ge=1, le=100)
    return_scores: bool = False


def _document(passage: Passage) -> dict[str, Any]:
    return {"id": passage.id, "contents": f'"{passage.title}"\n{passage.text}', "title": passage.title}


def create_retrieve_app(settings: Settings | None = None, *, backend: SearchBackend | None = None) -> FastAPI:
    settings = settings or Settings()
    state: dict[str, SearchBackend] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["backend"] = backend or await build_backend(settings)
        try:
            yield
        finally:
            if backend is None:
                await state["backend"].aclose()

    app = FastAPI(title="sem-retrieve", summary="Search-R1's /retrieve API over SEM's backends.", lifespan=lifespan)
    install_error_handlers(app)

    def current() -> SearchBackend:
        if "backend" not in state:
            raise NotReadyError("the index is loading")
        return state["backend"]

    @app.post("/retrieve")
    async def retrieve(body: RetrieveRequest, request: Request) -> dict[str, Any]:
        found = await current().search(body.queries, body.topk)
        if body.return_scores:
            return {"result": [[{"document": _document(p), "score": p.score} for p in hits] for hits in found]}
        return {"result": [[_document(p) for p in hits] for hits in found]}

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        b = current()
        return {"status": "ok", "backend": b.name, "version": b.version}

    return app


cli = typer.Typer(add_completion=False, help="Serve a SEM search backend under Search-R1's /retrieve API.")


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8001,
    backend: Annotated[str | None, typer.Option(help="Backend name (SEM_SEARCH__BACKEND).")] = None,
) -> None:
    """Start the retrieval server (settings from SEM_* variables: SEM_CORPUS, SEM_SEARCH__DENSE_MODEL, ...)."""
    import uvicorn

    settings = Settings(search={"backend": backend}) if backend else Settings()
    if settings.search.backend == "retriever":
        raise typer.BadParameter("sem-retrieve cannot serve the retriever backend (it would call itself)")
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_retrieve_app(settings), host=host, port=port, log_level=settings.log_level)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
