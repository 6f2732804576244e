"""Search backends by name, from the `sem.search_backends` entry points (built-ins are registered the same way).

A third party adds a backend without forking: a class with `from_settings(settings)` that meets
`SearchBackend`, declared under `[project.entry-points."sem.search_backends"]`.
"""

from __future__ import annotations

import importlib
from functools import cache
from importlib.metadata import entry_points
from typing import Any

from sem.errors import UnknownBackendError

ENTRY_POINT_GROUP = "sem.search_backends"
# Also known when the package runs from a source tree without installed metadata.
_BUILTINS = {
    "bm25": "sem.search.bm25:BM25Backend",
    "dense": "sem.search.dense:DenseBackend",
    "retriever": "sem.search.remote:RetrieverBackend",
    "searxng": "sem.search.web:SearxngBackend",
    "tavily": "sem.search.web:TavilyBackend",
    "brave": "sem.search.web:BraveBackend",
    "serper": "sem.search.web:SerperBackend",
    "milvus": "sem.search.milvus:MilvusBackend",
}


@cache
def available_backends() -> dict[str, str]:
    """Name -> "module:Class" of every backend that can be loaded (loaded once, lazily)."""
    found = dict(_BUILTINS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = ep.value
    return found


def load_backend_class(name: str) -> Any:
    """The backend class registered under `name`.

    >>> load_backend_class("bm25").__name__
    'BM25Backend'
    """
    target = available_backends().get(name)
    if target is None:
        raise UnknownBackendError(name, list(available_backends()))
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
