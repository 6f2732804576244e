"""The SearchBackend contract and the passage type every backend returns."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic import BaseModel


class Passage(BaseModel):
    """One retrieved passage."""

    id: str
    title: str = ""
    text: str
    score: float | None = None


@runtime_checkable
class SearchBackend(Protocol):
    """A batched search: one list of passages per query, best first.

    `name` and `version` make cache keys: change `version` when the index changes (e.g. the corpus hash).
    A backend that can search in several ways lists them in `modes` and takes `mode=` (see `search_modes`).
    """

    name: str
    version: str

    async def search(self, queries: list[str], k: int) -> list[list[Passage]]: ...

    async def check_health(self) -> None: ...

    async def aclose(self) -> None: ...


def search_modes(backend: object) -> tuple[str, ...]:
    """The ways a backend can search, its default first, for backends that offer several (Milvus: bm25, dense,
    hybrid); such a backend takes `mode=` in `search`. Empty for the rest."""
    return tuple(getattr(backend, "modes", ()))
