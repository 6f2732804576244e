"""Pluggable search: the SearchBackend protocol, the registry and the built-in BM25 backend."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sem.search.base import Passage, SearchBackend
from sem.search.registry import available_backends, load_backend_class

if TYPE_CHECKING:
    from sem.settings import Settings

__all__ = ["Passage", "SearchBackend", "available_backends", "build_backend", "load_backend_class"]


async def build_backend(settings: Settings) -> SearchBackend:
    """Build and load the backend `settings.search.backend` names (indexes are built or opened here)."""
    cls = load_backend_class(settings.search.backend)
    backend = await cls.from_settings(settings)
    search = settings.search
    if search.simulated_latency_ms is None:
        return backend
    from sem.search.costly import CostlyBackend, SearchCost

    # a benchmark tool: every call waits and bills as a web search API would (sem.search.costly)
    cost = SearchCost(search.simulated_latency_ms, search.simulated_latency_spread, search.price_per_1000)
    return CostlyBackend(backend, cost, seed=search.simulated_latency_seed)
