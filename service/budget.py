"""Search budgets and source filters at the service's edge: what a request may search, decided before any work.

`prepare_search` is called by both APIs once their loop options are built: it sets the request's source filter (the
deployment's and the request's, both applied) and its view of the search budget. A spent budget turns the answer
into a closed-book one (`never`, flagged `search_budget_exhausted`), except under `always`, which asked for a search
and gets a 429 with `Retry-After`. `BudgetHeadersMiddleware` tells every answer what is left and when it resets, and
`GET /v1/budget` tells a client before it asks.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from sem.budget import DEPLOYMENT, Allowance, Verdict
from sem.domains import DomainFilter
from sem.errors import SearchBudgetExhausted
from sem.loop import LoopOptions, SearchPolicy
from service.deps import StateDep
from service.exceptions import InvalidRequest

if TYPE_CHECKING:
    from service.protocol import SearchDomains
    from service.state import ServiceState

REMAINING = "x-sem-search-budget-remaining"  # searches left under the tightest limit
RESET = "x-sem-search-budget-reset"  # seconds until it resets
STATE_KEY = "search_budget"  # where the request's Allowance is kept (request.state), for the headers


def principal(request: Request) -> str:
    """Whom the request counts against: set by the guard (`service.deps`); the client's address otherwise."""
    given = getattr(request.state, "principal", None)
    return given or f"ip:{request.client.host if request.client else 'unknown'}"


def source_filter(state: ServiceState, given: SearchDomains | None, param: str) -> DomainFilter | None:
    """The deployment's filter narrowed by the request's (400 naming the field when nothing could pass)."""
    asked = DomainFilter.of(given.allow, given.block) if given else DomainFilter()
    try:
        return state.domains.both(asked) or None
    except ValueError as exc:
        raise InvalidRequest(f"{exc}: the deployment allows only those", param=f"{param}.allow") from None


async def prepare_search(
    state: ServiceState, request: Request, options: LoopOptions, domains: SearchDomains | None, *, param: str
) -> None:
    """Set the request's source filter and search budget on `options` (see the module's docstring)."""
    options.domains = source_filter(state, domains, param)
    budget = state.budget
    if not budget.enabled or options.client_search:  # the client's own searches spend the client's budget
        return
    who = principal(request)
    verdict = await budget.check(who)
    allowance = budget.allowance(who, strict=options.policy is SearchPolicy.always, verdict=verdict)
    request.state.search_budget = allowance
    if options.policy is SearchPolicy.never or not verdict.exhausted:
        options.allowance = allowance
        return
    if allowance.strict:
        state.metrics.budget_exhausted.labels("refused").inc()
        raise SearchBudgetExhausted(verdict.describe(), retry_after_s=math.ceil(verdict.reset_s or 1))
    state.metrics.budget_exhausted.labels("closed_book").inc()
    options.policy, options.search_budget_exhausted = SearchPolicy.never, True


def budget_headers(verdict: Verdict | None) -> list[tuple[bytes, bytes]]:
    if verdict is None or verdict.left is None:
        return []
    reset = math.ceil(verdict.reset_s or 0)
    return [(REMAINING.encode(), str(verdict.left).encode()), (RESET.encode(), str(reset).encode())]


class BudgetHeadersMiddleware:
    """Adds the budget's standing to the response of a request that had one (the latest: after its searches when the
    answer is whole, before them on a stream, whose headers go first)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_budget(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                allowance: Allowance | None = scope.get("state", {}).get(STATE_KEY)
                if allowance is not None:
                    message = {**message, "headers": [*message.get("headers", []), *budget_headers(allowance.last)]}
            await send(message)

        await self.app(scope, receive, send_with_budget)


class BudgetLimitOut(BaseModel):
    scope: str = Field(description="`deployment`, or `key` (this key's own, or each client's without auth).")
    window: str = Field(description="minute, day or month (fixed windows in UTC).")
    limit: int
    spent: int
    left: int
    reset_s: int = Field(description="Seconds until the window turns over.")


class BudgetOut(BaseModel):
    enabled: bool
    store: str = Field(description="redis (shared by replicas) or memory (this process only).")
    count_cache_hits: bool
    left: int | None = Field(None, description="Searches left under the tightest limit.")
    limits: list[BudgetLimitOut]


router = APIRouter(tags=["budget"])


@router.get("/v1/budget", response_model=BudgetOut)
async def budget(state: StateDep, request: Request) -> BudgetOut:
    """This caller's search budgets: per window, spent and left, and when each resets."""
    budget = state.budget
    verdict = await budget.check(principal(request)) if budget.enabled else Verdict(False, ())
    limits = [
        BudgetLimitOut(scope=DEPLOYMENT if s.limit.scope == DEPLOYMENT else "key", window=s.limit.window.value,
                       limit=s.limit.searches, spent=s.spent, left=s.left, reset_s=math.ceil(s.reset_s))
        for s in verdict.standings
    ]  # fmt: skip
    return BudgetOut(enabled=budget.enabled, store=budget.store, count_cache_hits=budget.settings.count_cache_hits,
                     left=verdict.left, limits=limits)  # fmt: skip
