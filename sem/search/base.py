"""The SearchBackend contract, and bases for backends over a local corpus (the Passage type is in sem.types)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sem.corpus import corpus_hash, load_corpus
from sem.types import Passage

if TYPE_CHECKING:
    from sem.settings import Settings


@runtime_checkable
class SearchBackend(Protocol):
    """A batched search: one list of passages per query, best first.

    `name` and `version` make cache keys: change `version` when the index changes (e.g. the corpus hash).
    `modes`: the ways it can search, its default first (Milvus: bm25, dense, hybrid), or empty for one way; `search`
    is only given a `mode` from `modes`.
    `domain_filters`: True when `search` takes `domains` (a `sem.domains.DomainFilter`) and asks its source for
    those sources only (Tavily's include/exclude); otherwise it is never given one, and what it returns is filtered
    after (`sem.search.guards`). Whatever a backend says, its passages are filtered again.
    """

    name: str
    version: str
    modes: tuple[str, ...]
    domain_filters: bool

    async def search(self, queries: list[str], k: int, *, mode: str | None = None) -> list[list[Passage]]: ...

    async def check_health(self) -> None: ...

    async def aclose(self) -> None: ...


def search_modes(backend: object) -> tuple[str, ...]:
    """`backend.modes`; a plugin written before `modes` was part of the protocol has none (one way to search)."""
    return tuple(getattr(backend, "modes", ()))


def filters_domains(backend: object) -> bool:
    """`backend.domain_filters`; a plugin written before it was part of the protocol filters nothing itself."""
    return bool(getattr(backend, "domain_filters", False))


class LocalIndexBackend:
    """A base for backends that index a local corpus file (bm25, dense, milvus): the corpus is resolved once here
    (`SEM_CORPUS`, else the embedded default, with a clear error when it was never prepared), the backend is built
    from it by `from_corpus` and loaded off the event loop by `load_sync`."""

    domain_filters: bool = False  # a local corpus has no sources to ask for: filtered after

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


@contextmanager
def _build_lock(index_dir: Path) -> Iterator[None]:
    """Hold the lock file beside `index_dir`; where that folder cannot be written (a read-only corpus whose index
    was built beforehand) there is nothing to race on, and opening goes on without it."""
    from filelock import FileLock

    lock = FileLock(index_dir.with_name(index_dir.name + ".lock"))
    try:
        lock.acquire()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.release()


class StoredIndexBackend(LocalIndexBackend):
    """A local index stored beside its corpus (bm25, dense), opened when it was built from this corpus's content
    (its sha256) and rebuilt otherwise; searched off the event loop by `search_sync`. A backend says where its
    index stands (`index_dir`), which corpus hash built it (`_built_from`), and how to open and build it."""

    name: str
    corpus_path: Path
    index_dir: Path
    version: str
    _passages: list[Passage]
    _index: Any = None  # the open index: bm25s's retriever, a faiss index
    _built: str = "indexed"  # what building did, for the log line

    def load_sync(self) -> None:
        log = logging.getLogger(type(self).__module__)  # the backend's own logger, as before this base
        self._passages = load_corpus(self.corpus_path)
        digest = corpus_hash(self.corpus_path)
        self.version = self._version(digest)
        # Processes that open one corpus at once (training ranks, server workers) take turns: the first builds,
        # the others open what it stored, none reads a half-written index or deletes one another is writing.
        with _build_lock(self.index_dir):
            if self._built_from() == digest:
                self._open()
                log.info("%s: opened index of %d passages at %s", self.name, len(self._passages), self.index_dir)
                return
            started = time.perf_counter()
            self._build(digest)
        log.info("%s: %s %d passages in %.1fs -> %s", self.name, self._built, len(self._passages),
                 time.perf_counter() - started, self.index_dir)  # fmt: skip

    def _version(self, digest: str) -> str:
        """The cache version for an index of a corpus with this hash."""
        return digest[:16]

    def _built_from(self) -> str | None:
        """The corpus hash the stored index was built from; None when there is none."""
        raise NotImplementedError

    def _open(self) -> None:
        raise NotImplementedError

    def _build(self, digest: str) -> None:
        """Build the index of `self._passages`, store it with `digest`, and leave it open."""
        raise NotImplementedError

    def _loaded(self) -> Any:
        """The open index; RuntimeError before `load()`."""
        if self._index is None:
            raise RuntimeError(f"{type(self).__name__}.load() has not been called")
        return self._index

    def __len__(self) -> int:
        return len(self._passages)

    async def search(self, queries: list[str], k: int, *, mode: str | None = None) -> list[list[Passage]]:
        return await asyncio.to_thread(self.search_sync, queries, k)

    def search_sync(self, queries: list[str], k: int) -> list[list[Passage]]:
        raise NotImplementedError

    async def check_health(self) -> None:
        if self._index is None:
            raise RuntimeError(f"{self.name} index not loaded")

    async def aclose(self) -> None:
        self._index = None
