"""What a request may read and spend, around the cache: its source filter and its search budget.

The cache (`sem.cache.CachedSearch`) keys, shares and batches searches; it knows neither rule. `retrieve` here adds
them: a filtered request asks a backend that cannot filter its sources itself for `FILTER_OVERFETCH` times the
passages (some are left once the blocked ones go), drops what the filter does not allow (every backend's results and
every cache entry, whatever the backend says it did) and keeps `k`; a request's `Allowance` is the cache's `admit`
hook, asked before each query and told whether it would be a free hit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sem.search.base import filters_domains
from sem.types import Retrieval

if TYPE_CHECKING:
    from sem.budget import Allowance
    from sem.domains import DomainFilter
    from sem.loop_options import Searcher

# A backend that cannot filter sources itself is asked for this many times the passages when a filter is on, so that
# some are left once the blocked ones are dropped.
FILTER_OVERFETCH = 3


async def retrieve(
    searcher: Searcher,
    queries: list[str],
    k: int,
    mode: str | None = None,
    *,
    domains: DomainFilter | None = None,
    allowance: Allowance | None = None,
) -> list[Retrieval]:
    """`searcher.retrieve` under the request's source filter and budget (each passed on only when set: a searcher
    need not know of either)."""
    domains = domains or None
    fetch = k * FILTER_OVERFETCH if domains and not filters_domains(searcher) else k
    given: dict[str, Any] = {}
    if domains:
        given["domains"] = domains
    if allowance is not None:
        given["admit"] = allowance.take
    found = await searcher.retrieve(queries, fetch, mode, **given)
    for r in found:
        if domains:
            r.passages, r.dropped = domains.apply(r.passages)
        r.passages = r.passages[:k]
    return found
