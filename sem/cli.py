"""`sem`: set-up commands of the core (`sem assets`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from sem.errors import AssetsMissingError

app = typer.Typer(help="SEM core commands.", no_args_is_help=True, add_completion=False)


@app.callback()
def _main() -> None:
    """SEM core commands."""


@app.command()
def assets(
    home: Annotated[Path | None, typer.Option(help="Asset folder (default: SEM_HOME or ~/.cache/sem).")] = None,
    model: Annotated[bool, typer.Option(help="Prepare the default model.")] = True,
    corpus: Annotated[bool, typer.Option(help="Prepare the default corpus and its BM25 index.")] = True,
    force: Annotated[bool, typer.Option(help="Rebuild even when already prepared.")] = False,
) -> None:
    """Fetch and prepare the embedded defaults (idempotent): the SmolLM2 model and the Wikipedia corpus."""
    from sem.assets import prepare_corpus, prepare_model
    from sem.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings(home=home) if home else Settings()
    root = settings.home_dir
    root.mkdir(parents=True, exist_ok=True)
    try:
        if model:
            typer.echo(f"model:  {prepare_model(root, force=force)}")
        if corpus:
            path = prepare_corpus(root, force=force)
            from sem.search.bm25 import BM25Backend

            backend = BM25Backend(path)
            backend.load_sync()  # builds the index now, so the first start of the service is fast
            typer.echo(f"corpus: {path} ({len(backend)} passages, index {backend.index_dir})")
    except AssetsMissingError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def ask(ctx: typer.Context) -> None:
    """Ask a running service a question (the SDK's CLI: `sem ask "Who wrote Hamlet?" --search always`)."""
    try:
        from sem_client.cli import main as client_main
    except ImportError as exc:
        typer.secho("`sem ask` needs the SDK: pip install ./clients/python", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    raise typer.Exit(client_main(["ask", *ctx.args]))


if __name__ == "__main__":
    app()
