"""`sem`: set-up commands of the core (`sem assets`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from sem.corpus import iter_passages
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


keys_app = typer.Typer(
    help="API keys for the service (SEM_AUTH__*): only their sha256 is stored.", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def keys_new(
    redis_url: Annotated[
        str | None, typer.Option(help="Also add its hash to this Redis (SEM_AUTH__REDIS_KEYS).")
    ] = None,
) -> None:
    """Make a key: give the key to the client, put the hash in SEM_AUTH__API_KEY_HASHES (or Redis)."""
    from sem.keys import REDIS_SET, hash_key, new_key

    key = new_key()
    digest = hash_key(key)
    if redis_url:
        import redis

        redis.from_url(redis_url).sadd(REDIS_SET, digest)
    typer.echo(f"key:    {key}\nsha256: {digest}" + (f"\nadded to {REDIS_SET}" if redis_url else ""))


@keys_app.command("hash")
def keys_hash(key: Annotated[str, typer.Argument(help="The key to hash.")]) -> None:
    """The sha256 that settings hold for an existing key."""
    from sem.keys import hash_key

    typer.echo(hash_key(key))


@keys_app.command("budget")
def keys_budget(
    key: Annotated[str, typer.Argument(help="The key, or its sha256 (`sem keys hash`).")],
    minute: Annotated[int | None, typer.Option(min=0, help="Searches per minute.")] = None,
    day: Annotated[int | None, typer.Option(min=0, help="Searches per day (UTC).")] = None,
    month: Annotated[int | None, typer.Option(min=0, help="Searches per calendar month (UTC).")] = None,
    clear: Annotated[bool, typer.Option(help="Remove the key's own budget: back to SEM_BUDGET__PER_KEY.")] = False,
    redis_url: Annotated[
        str | None, typer.Option(help="Store it in this Redis (applies within seconds, no restart).")
    ] = None,
) -> None:
    """Give one key its own search budget (instead of SEM_BUDGET__PER_KEY): in Redis, or as the setting to add."""
    import json

    from sem.budget import KEY_LIMITS
    from sem.keys import hash_key, principal_of
    from sem.settings import Window

    is_digest = len(key) == 64 and all(c in "0123456789abcdef" for c in key)
    digest = key if is_digest else hash_key(key)
    limits = {w: n for w, n in ((Window.minute, minute), (Window.day, day), (Window.month, month)) if n is not None}
    if not limits and not clear:
        raise typer.BadParameter("give --minute, --day and/or --month (or --clear)", param_hint="--day")
    if clear:
        limits = {}
    if redis_url is None:
        setting = {digest: {w.value: n for w, n in limits.items()}}
        typer.echo(f"SEM_BUDGET__KEYS='{json.dumps(setting)}'  (merge with the keys already there)")
        return

    import redis

    store = redis.from_url(redis_url)
    if limits:
        store.hset(KEY_LIMITS, principal_of(digest), json.dumps({w.value: n for w, n in limits.items()}))
    else:
        store.hdel(KEY_LIMITS, principal_of(digest))
    shown = ", ".join(f"{n} per {w.value}" for w, n in limits.items()) or "SEM_BUDGET__PER_KEY's"
    typer.echo(f"{principal_of(digest)}: {shown} (stored in Redis)")


corpus_app = typer.Typer(help="Search corpora (JSONL: id, title, text).", no_args_is_help=True)
app.add_typer(corpus_app, name="corpus")


class CorpusSource(StrEnum):
    wiki = "wiki"  # the embedded Wikipedia summaries
    musique = "musique"  # the paragraphs of MuSiQue rows
    hotpotqa = "hotpotqa"
    twowiki = "2wiki"
    jsonl = "jsonl"  # a user's JSONL
    folder = "folder"  # a folder of .txt / .md files


BENCHMARK_LOADERS = {"musique": "load_musique", "hotpotqa": "load_hotpotqa", "2wiki": "load_2wiki"}  # sem.evaldata


def _passages(source: CorpusSource, input: Path | None, words: int, overlap: int) -> Iterable[Any]:
    """The passages of `source`: the embedded Wikipedia sample, a benchmark file's paragraphs, or chunks of a JSONL
    file or a folder; a source that needs --input and has none is refused."""
    from sem.corpus import passages_from_folder, passages_from_jsonl

    if source is CorpusSource.wiki:
        from sem.assets import prepare_corpus
        from sem.settings import Settings

        return list(iter_passages(prepare_corpus(Settings().home_dir)))
    if input is None:
        needs = "give the benchmark file with --input" if source.value in BENCHMARK_LOADERS else "needs --input"
        raise typer.BadParameter(f"{source.value}: {needs}", param_hint="--input")
    if source.value in BENCHMARK_LOADERS:
        from sem.evaldata import benchmarks

        return benchmarks.paragraph_corpus(getattr(benchmarks, BENCHMARK_LOADERS[source.value])(input))
    if source is CorpusSource.jsonl:
        return passages_from_jsonl(input, words=words, overlap=overlap)
    return passages_from_folder(input, words=words, overlap=overlap)


@corpus_app.command("build")
def corpus_build(
    source: Annotated[CorpusSource, typer.Argument(help="Where the passages come from.")],
    out: Annotated[Path, typer.Option(help="The corpus JSONL to write.")],
    input: Annotated[
        Path | None, typer.Option("--input", help="File or folder (benchmark file, JSONL, folder).")
    ] = None,
    words: Annotated[int, typer.Option(help="Chunk size in words (jsonl, folder).")] = 200,
    overlap: Annotated[int, typer.Option(help="Words shared by neighbouring chunks.")] = 40,
    index: Annotated[bool, typer.Option(help="Build the BM25 index too.")] = True,
) -> None:
    """Build a corpus (and its BM25 index); point SEM_CORPUS at it. Several files: run once each and concatenate."""
    from tqdm import tqdm

    from sem.corpus import corpus_hash, write_corpus

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    rows = _passages(source, input, words, overlap)
    n = write_corpus(tqdm(rows, desc="passages", unit=" p"), out)
    typer.echo(f"{n} passages -> {out} (sha256 {corpus_hash(out)[:16]})")
    if index:
        from sem.search.bm25 import BM25Backend

        backend = BM25Backend(out)
        backend.load_sync()
        typer.echo(f"bm25 index -> {backend.index_dir}")


if __name__ == "__main__":
    app()
