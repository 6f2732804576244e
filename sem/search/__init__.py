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
    return await cls.from_settings(settings)
