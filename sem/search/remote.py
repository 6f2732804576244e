"""`retriever`: a client of Search-R1's retrieval server.

`POST {url}/retrieve {"queries", "topk", "return_scores": true}` ->
`{"result": [[{"document": {"id", "contents": "\\"Title\\"\\ntext"}, "score"}, ...], ...]}`; users of that ecosystem
plug their e5/BM25 wiki-18 index in, and `sem-retrieve` serves any of our backends the same way.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import httpx

from sem.errors import ConfigError, SearchError
from sem.search.base import Passage

if TYPE_CHECKING:
    from sem.settings import Settings


def parse_contents(contents: str) -> tuple[str, str]:
    """Search-R1's `contents` is `"Title"\\ntext`; split it.

    >>> parse_contents('"Hamlet"\\nA tragedy by Shakespeare.')
    ('Hamlet', 'A tragedy by Shakespeare.')
    >>> parse_contents("just text")
    ('', 'just text')
    """
    first, sep, rest = contents.partition("\n")
    if sep and len(first) >= 2 and first.startswith('"') and first.endswith('"'):
        return first[1:-1], rest
    return "", contents


class RetrieverBackend:
    """Client of a Search-R1 style retrieval server (ours: `sem-retrieve`)."""

    modes: tuple[str, ...] = ()  # one way to search
    domain_filters = False  # the retrieval server takes queries only: filtered after

    name = "retriever"

    def __init__(self, url: str, timeout_s: float = 10.0, client: httpx.AsyncClient | None = None) -> None:
        self.url = url.rstrip("/")
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        # Until the server says which index it serves, key the cache by its address.
        self.version = "url-" + hashlib.sha256(self.url.encode()).hexdigest()[:12]

    @classmethod
    async def from_settings(cls, settings: Settings) -> RetrieverBackend:
        if not settings.search.retriever_url:
            raise ConfigError("the retriever backend needs SEM_SEARCH__RETRIEVER_URL (e.g. http://127.0.0.1:8001)")
        backend = cls(settings.search.retriever_url, settings.search.timeout_s)
        await backend.load()
        return backend

    async def load(self) -> None:
        """Ask `sem-retrieve` which index it serves (its version versions our cache keys); others may not say."""
        try:
            r = await self._client.get(f"{self.url}/healthz")
            if r.status_code == 200 and isinstance(r.json(), dict) and r.json().get("version"):
                info = r.json()
                self.version = f"{info.get('backend', 'remote')}-{info['version']}"
        except (httpx.HTTPError, ValueError):
            pass  # a plain Search-R1 server has no /healthz; searches will tell if it is down

    async def search(self, queries: list[str], k: int, *, mode: str | None = None) -> list[list[Passage]]:
        body = {"queries": queries, "topk": k, "return_scores": True}
        try:
            r = await self._client.post(f"{self.url}/retrieve", json=body)
            r.raise_for_status()
            result = r.json()["result"]
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            raise SearchError(f"retriever at {self.url} failed: {exc}") from exc
        return [[self._passage(hit) for hit in hits] for hits in result]

    @staticmethod
    def _passage(hit: dict[str, Any]) -> Passage:
        doc = hit.get("document", hit)
        title, text = parse_contents(str(doc.get("contents", "")))
        return Passage(id=str(doc.get("id", "")), title=doc.get("title") or title, text=text, score=hit.get("score"))

    async def check_health(self) -> None:
        await self.search(["health"], 1)

    async def aclose(self) -> None:
        await self._client.aclose()
