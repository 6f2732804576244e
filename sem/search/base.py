"""The SearchBackend contract, and a base for backends over a local corpus (the Passage type is in sem.types)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sem.types import Passage

if TYPE_CHECKING:
    from sem.settings import Settings


@runtime_checkable
class SearchBackend(Protocol):
    """A batched search: one list of passages per query, best first.

    `name` and `version` make cache keys: change `version` when the index changes (e.g. the corpus hash).
    `modes`: the ways it can search, its default first (Milvus: bm25, dense, hybrid), or empty for one way; `search`
    is only given a `mode` from `modes`.
    """

    name: str
    version: str
    modes: tuple[str, ...]

    async def search(self, queries: list[str], k: int, *, mode: str | None = None) -> list[list[Passage]]: ...

    async def check_health(self) -> None: ...

    async def aclose(self) -> None: ...


def search_modes(backend: object) -> tuple[str, ...]:
    """`backend.modes`; a plugin written before `modes` was part of the protocol has none (one way to search)."""
    return tuple(getattr(backend, "modes", ()))


class LocalIndexBackend:
    """A base for backends that index a local corpus file (bm25, dense, milvus): the corpus is resolved once here
    (`SEM_CORPUS`, else the embedded default, with a clear error when it was never prepared), the backend is built
    from it by `from_corpus` and loaded off the event loop by `load_sync`."""

    @classmethod
    def from_corpus(cls, corpus: Path, settings: Settings) -> Any:
        return cls(corpus)  # type: ignore[call-arg]

    @classmethod
    async def from_settings(cls, settings: Settings) -> Any:
        from sem.assets import ensure_corpus

        if settings.corpus is None:
            ensure_corpus(settings.home_dir)
        backend = cls.from_corpus(settings.corpus_path, settings)
        await backend.load()
        return backend

    async def load(self) -> None:
        await asyncio.to_thread(self.load_sync)

    def load_sync(self) -> None:
        raise NotImplementedError
