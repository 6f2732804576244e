"""Wire models shared by every API: errors, health, and what a search and the token usage look like."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from sem.domains import normalize_domain


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


class Health(BaseModel):
    status: Literal["ok", "degraded", "loading", "restarting", "error"] = Field(
        description="degraded: the search backend fails its health check; answers go on, without results. "
        "restarting: the model engine died and is being started again."
    )
    model: str | None = None
    engine: str | None = None
    search_backend: str | None = None
    cache: str | None = None
    detail: str | None = None


class Stats(BaseModel):
    """`GET /v1/stats`: the service's counters since start, for dashboards and the playground."""

    answers: int
    answers_by_policy: dict[str, int]
    searches: int
    searches_per_answer: float | None
    search_errors: int
    cache_hits: int
    cache_misses: int
    cache_hit_rate: float | None
    mean_latency_ms: float | None
    search_seconds: float = Field(0.0, description="Seconds spent waiting on the search backend (cache misses).")
    search_spend: float = Field(0.0, description="What the backend's queries cost, at SEM_SEARCH__PRICE_PER_1000.")
    search_rate_achieved: float | None = Field(
        None, description="Of the answers the search-rate dial set the threshold of, the share that searched."
    )


class PassageOut(BaseModel):
    id: str
    title: str
    text: str
    score: float | None = None


class SearchOut(BaseModel):
    query: str
    passages: list[PassageOut]
    cached: bool
    latency_ms: float
    error: str | None = None
    forced: bool = Field(False, description="Inserted by the `always` policy rather than asked for by the model.")
    client: bool = Field(False, description="Run by the client (a tool call); its text is the tool message's.")
    dropped: int = Field(0, description="Passages the source filter (`search_domains`) kept from the model.")


Domain = Annotated[str, AfterValidator(normalize_domain)]


class SearchDomains(BaseModel):
    """A request's source filter, applied with the deployment's (`SEM_SEARCH__ALLOW_DOMAINS`, `__BLOCK_DOMAINS`):
    a passage reaches the model only from an allowed domain (or subdomain), never from a blocked one. A passage's
    domain is its URL's host; a local corpus passage without a URL is known by its id's prefix (`wiki:42`: `wiki`)."""

    model_config = ConfigDict(extra="forbid")

    allow: list[Domain] = Field(default_factory=list, max_length=100, description="Only these (empty: any).")
    block: list[Domain] = Field(default_factory=list, max_length=100, description="Never these.")


class CitationOut(BaseModel):
    """A passage the answer rests on (sem.citations): the answer's words are in it."""

    passage_id: str = Field(description="The passage's id, as in `searches[].passages[].id`.")
    title: str
    url: str | None = Field(None, description="The passage's URL, where the search backend has one.")
    search: int = Field(description="Which search found it (index into `searches`).")
    rank: int = Field(description="Its [n] in that search's results.")
    start: int = Field(description="Start of the span of `answer` it supports (characters).")
    end: int = Field(description="End of that span (exclusive).")
    quote: str = Field(description="The passage's text that holds it: what to highlight.")
    quote_start: int = Field(description="Where the quote starts in the passage's text.")
    quote_end: int


class Usage(BaseModel):
    prompt_tokens: int = Field(description="The prompt plus every inserted search result the model read.")
    completion_tokens: int = Field(description="Tokens the model generated.")
    total_tokens: int
    num_search_queries: int


# `search_rate` of both APIs (/v1/answer, chat's `sem`): the field and its check against the fields before it.
SearchRate = Annotated[
    float | None,
    Field(
        ge=0.0,
        le=1.0,
        description="Search this share of questions, those the model is least sure of (the `confidence` gate, its "
        "threshold following the model's recent confidences; held lower by a search budget so it lasts its window). "
        "Implies search='confidence'; not with another policy or a confidence_threshold.",
    ),
]


def search_rate_validator() -> Any:
    """The validator a request model declares beside its `search_rate` (after `search` and `confidence_threshold`)."""

    def check(cls: type, rate: float | None, info: ValidationInfo) -> float | None:
        return check_search_rate(rate, info.data.get("search"), info.data.get("confidence_threshold"))

    return field_validator("search_rate")(classmethod(check))  # type: ignore[arg-type]


def check_search_rate(rate: float | None, search: object, threshold: float | None) -> float | None:
    """A search rate asks the `confidence` gate for a share of searches: it cannot go with another policy, nor with a
    threshold of its own (the dial sets it). A ValueError here is a 422 on `search_rate`."""
    if rate is None:
        return rate
    if search is not None and str(getattr(search, "value", search)) != "confidence":
        raise ValueError(f"search_rate needs search='confidence' (or no search policy), not {search!r}")
    if threshold is not None:
        raise ValueError("give search_rate or confidence_threshold, not both: the rate sets the threshold")
    return rate


# The OpenAPI responses of a route that may stream (SSE) and answers errors in OpenAI's shape (both OpenAI APIs).
STREAMED_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}},
    **{status: {"model": ErrorResponse} for status in (400, 404, 422, 503)},
}
