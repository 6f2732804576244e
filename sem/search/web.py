"""Web search: a SearXNG instance's JSON API, and APIs that need a key: Tavily, Brave Search, Serper (Google).

Keys come from settings (`SEM_SEARCH__WEB_API_KEY`, a secret: never logged or shown in errors);
`SEM_SEARCH__WEB_API_URL` overrides the endpoint (a proxy, a test server); SearXNG's address is
`SEM_SEARCH__SEARXNG_URL`. One HTTP call per query, run concurrently.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from sem.errors import ConfigError, SearchError
from sem.search.base import Passage

if TYPE_CHECKING:
    from sem.domains import DomainFilter
    from sem.settings import Settings


class WebAPIBackend:
    """Shared plumbing; subclasses say how to ask and how to read the answer."""

    modes: tuple[str, ...] = ()  # one way to search

    name: ClassVar[str]
    default_url: ClassVar[str]
    needs_key: ClassVar[bool] = True
    domain_filters: ClassVar[bool] = False  # True: `request` passes a source filter to the API (sem.cache asks then)
    version = "web"  # results change over time: the cache TTL bounds staleness

    def __init__(self, api_key: str, url: str | None = None, timeout_s: float = 10.0) -> None:
        if self.needs_key and not api_key:
            raise ConfigError(f"the {self.name} backend needs SEM_SEARCH__WEB_API_KEY")
        self._key = api_key
        self.url = url or self.default_url
        self._client = httpx.AsyncClient(timeout=timeout_s)

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}(url={self.url!r})"

    @classmethod
    async def from_settings(cls, settings: Settings) -> WebAPIBackend:
        key = settings.search.web_api_key.get_secret_value() if settings.search.web_api_key else ""
        return cls(key, settings.search.web_api_url, settings.search.timeout_s)

    def request(self, query: str, k: int, domains: DomainFilter | None = None) -> httpx.Request:
        raise NotImplementedError

    def parse(self, body: dict[str, Any], k: int) -> list[Passage]:
        raise NotImplementedError

    async def _one(self, query: str, k: int, domains: DomainFilter | None = None) -> list[Passage]:
        try:
            r = await self._client.send(self.request(query, k, domains))
            r.raise_for_status()
            return self.parse(r.json(), k)
        except httpx.HTTPStatusError as exc:  # the message must not carry the request (its headers hold the key)
            raise SearchError(f"{self.name} answered HTTP {exc.response.status_code}") from None
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise SearchError(f"{self.name} failed: {type(exc).__name__}") from None

    async def search(
        self, queries: list[str], k: int, *, mode: str | None = None, domains: DomainFilter | None = None
    ) -> list[list[Passage]]:
        return list(await asyncio.gather(*(self._one(q, k, domains) for q in queries)))

    async def check_health(self) -> None:
        await self._one("health", 1)

    async def aclose(self) -> None:
        await self._client.aclose()


class TavilyBackend(WebAPIBackend):
    name = "tavily"
    default_url = "https://api.tavily.com/search"
    domain_filters = True  # include_domains / exclude_domains

    def request(self, query: str, k: int, domains: DomainFilter | None = None) -> httpx.Request:
        body: dict[str, Any] = {"query": query, "max_results": k}
        if domains and domains.allow:
            body["include_domains"] = list(domains.allow)
        if domains and domains.block:
            body["exclude_domains"] = list(domains.block)
        return self._client.build_request("POST", self.url, json=body, headers={"Authorization": f"Bearer {self._key}"})

    def parse(self, body: dict[str, Any], k: int) -> list[Passage]:
        return [
            Passage(id=r["url"], title=r.get("title", ""), text=r.get("content", ""), score=r.get("score"))
            for r in body.get("results", [])[:k]
        ]


class BraveBackend(WebAPIBackend):
    name = "brave"
    default_url = "https://api.search.brave.com/res/v1/web/search"

    def request(self, query: str, k: int, domains: DomainFilter | None = None) -> httpx.Request:
        return self._client.build_request(
            "GET", self.url, params={"q": query, "count": k}, headers={"X-Subscription-Token": self._key}
        )

    def parse(self, body: dict[str, Any], k: int) -> list[Passage]:
        results = body.get("web", {}).get("results", [])[:k]
        return [Passage(id=r["url"], title=r.get("title", ""), text=r.get("description", "")) for r in results]


class SerperBackend(WebAPIBackend):
    name = "serper"
    default_url = "https://google.serper.dev/search"

    def request(self, query: str, k: int, domains: DomainFilter | None = None) -> httpx.Request:
        return self._client.build_request(
            "POST", self.url, json={"q": query, "num": k}, headers={"X-API-KEY": self._key}
        )

    def parse(self, body: dict[str, Any], k: int) -> list[Passage]:
        results = body.get("organic", [])[:k]
        return [Passage(id=r["link"], title=r.get("title", ""), text=r.get("snippet", "")) for r in results]


class SearxngBackend(WebAPIBackend):
    """SearXNG's JSON API (enable `json` in its `search.formats`): `GET {url}/search?q=...&format=json`."""

    name = "searxng"
    needs_key = False

    @classmethod
    async def from_settings(cls, settings: Settings) -> SearxngBackend:
        if not settings.search.searxng_url:
            raise ConfigError("the searxng backend needs SEM_SEARCH__SEARXNG_URL (e.g. http://127.0.0.1:8888)")
        return cls("", settings.search.searxng_url.rstrip("/") + "/search", settings.search.timeout_s)

    def request(self, query: str, k: int, domains: DomainFilter | None = None) -> httpx.Request:
        return self._client.build_request("GET", self.url, params={"q": query, "format": "json"})

    def parse(self, body: dict[str, Any], k: int) -> list[Passage]:
        return [
            Passage(id=str(item.get("url", i)), title=item.get("title", ""), text=item["content"],
                    score=item.get("score"))
            for i, item in enumerate(body.get("results", [])[:k])
            if item.get("content")
        ]  # fmt: skip
