"""The data types the core's modules share: what a search returns. Plain types, importing nothing of SEM's, so any
module can use them without pulling in the search package or the cache."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel


class Passage(BaseModel):
    """One retrieved passage."""

    id: str
    title: str = ""
    text: str
    score: float | None = None


@dataclass(slots=True)
class Retrieval:
    """What one query found, and how."""

    query: str
    passages: list[Passage]
    cached: bool = False
    latency_ms: float = 0.0
    error: str | None = None
    dropped: int = 0  # passages the source filter kept from the model
    budget_exhausted: bool = False  # not searched: the search budget is spent
