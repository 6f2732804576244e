"""Source filters: what a domain is, what a passage's source is, how the deployment's and a request's filters combine,
and the in-process search cache keeping filtered and unfiltered results apart (Redis: test_search_filters.py)."""

from __future__ import annotations

import pytest

from sem.cache import CachedSearch, cache_key
from sem.domains import DomainFilter, normalize_domain, source_of
from sem.search import guards
from sem.types import Passage

WEB = [Passage(id=u, title=u, text="t") for u in ("https://en.wikipedia.org/wiki/Paris", "https://spam.example.com/a",
                                                    "https://example.com/b", "http://other.net/c")]  # fmt: skip


@pytest.mark.parametrize("bad", ["", " ", "https://example.com", "example.com/path", "exa mple.com", "-bad.com",
                                 "a..b", "ex@mple.com", "x" * 64 + ".com"])  # fmt: skip
def test_what_is_not_a_domain_is_a_value_error(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a domain"):
        normalize_domain(bad)


def test_sources_are_hosts_or_id_prefixes() -> None:
    assert [source_of(p) for p in WEB] == ["en.wikipedia.org", "spam.example.com", "example.com", "other.net"]
    assert source_of(Passage(id="wiki:12", text="")) == "wiki" and source_of(Passage(id="hamlet", text="")) == "hamlet"


def test_block_wins_and_allow_covers_subdomains() -> None:
    f = DomainFilter.of(allow=["example.com", "wikipedia.org"], block=["SPAM.example.com"])
    kept, dropped = f.apply(WEB)
    assert [p.id for p in kept] == ["https://en.wikipedia.org/wiki/Paris", "https://example.com/b"] and dropped == 2
    assert not DomainFilter() and DomainFilter().apply(WEB) == (WEB, 0)
    assert not DomainFilter.of(allow=["ample.com"]).allows(WEB[2])  # a suffix of a label is not a subdomain


def test_a_request_narrows_the_deployment_filter_never_widens_it() -> None:
    deployment = DomainFilter.of(allow=["example.com"], block=["other.net"])
    both = deployment.both(DomainFilter.of(allow=["spam.example.com", "wikipedia.org"], block=["x.org"]))
    assert both == DomainFilter(("spam.example.com",), ("other.net", "x.org"))
    assert deployment.both(None) is deployment and DomainFilter().both(deployment) is deployment
    with pytest.raises(ValueError, match="within the allowed domains"):
        deployment.both(DomainFilter.of(allow=["wikipedia.org"]))


def test_the_cache_key_carries_the_filter() -> None:
    class B:
        name, version = "bm25", "v"

    plain = cache_key(B(), "q", 3)
    assert plain == cache_key(B(), "q", 3, None, "")  # no filter: the keys of before
    keys = {plain, cache_key(B(), "q", 3, None, DomainFilter.of(block=["a.org"]).key()),
            cache_key(B(), "q", 3, None, DomainFilter.of(allow=["a.org"]).key())}  # fmt: skip
    assert len(keys) == 3


class Web:
    """A backend of web results, counting calls (the in-process cache's test; real backends: integration)."""

    name, version, modes = "web", "1", ()

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def search(self, queries: list[str], k: int, *, mode: str | None = None) -> list[list[Passage]]:
        self.calls.append(k)
        return [WEB[:k] for _ in queries]

    async def check_health(self) -> None: ...

    async def aclose(self) -> None: ...


async def test_a_filtered_search_is_cached_apart_and_fetches_more() -> None:
    backend = Web()
    cache = CachedSearch(backend, batch_window_ms=0)
    block = DomainFilter.of(block=["example.com"])
    (filtered,) = await guards.retrieve(cache, ["paris"], 2, domains=block)
    assert [p.id for p in filtered.passages] == [WEB[0].id, WEB[3].id] and filtered.dropped == 2
    (plain,) = await cache.retrieve(["paris"], 2)
    assert not plain.cached and [p.id for p in plain.passages] == [WEB[0].id, WEB[1].id]  # not the filtered entry
    (again,) = await guards.retrieve(cache, ["paris"], 2, domains=block)
    assert again.cached and again.dropped == 2 and again.passages == filtered.passages
    assert backend.calls == [6, 2]  # k x 3 for the filtered search: something is left after the drop
