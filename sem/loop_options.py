"""What one answer through the loop may do: the search policy, the searcher it asks, and `LoopOptions` (per
request; their defaults are the deployment's `LoopDefaults`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from sem.settings import LoopDefaults
from sem.types import Retrieval

if TYPE_CHECKING:
    from sem.budget import Allowance
    from sem.domains import DomainFilter


class SearchPolicy(StrEnum):
    auto = "auto"
    never = "never"
    always = "always"
    confidence = "confidence"
    either = "either"  # `auto`, with `confidence`'s search when the model lets an unsure first answer stand

    @property
    def model_decides(self) -> bool:
        """The model's own tokens may open a search (its decision, within the budget)."""
        return self in (SearchPolicy.auto, SearchPolicy.either)

    @property
    def reads_confidence(self) -> bool:
        """The first answer's confidence can search the question itself."""
        return self in (SearchPolicy.confidence, SearchPolicy.either)


class Searcher(Protocol):
    """What the loop needs from search: passages per query, cached or not (met by `sem.cache.CachedSearch`)."""

    async def retrieve(self, queries: list[str], k: int, mode: str | None = None, **given: Any) -> list[Retrieval]:
        """`given`: `domains` (a source filter, for the key and a backend that filters itself) and `admit` (the
        search budget's hook), passed only when set by `sem.search.guards.retrieve`."""
        ...


_DEFAULTS = LoopDefaults()  # the one place the loop's defaults are declared


@dataclass(slots=True)
class LoopOptions:
    policy: SearchPolicy = SearchPolicy.auto
    max_searches: int = _DEFAULTS.max_searches
    top_k: int = _DEFAULTS.top_k
    max_tokens: int = _DEFAULTS.max_tokens
    min_tokens: int = 0  # the model writes at least this many tokens before it may stop (vLLM's min_tokens)
    temperature: float = _DEFAULTS.temperature
    top_p: float = 1.0
    seed: int | None = None
    logprobs: bool = False
    passage_chars: int = _DEFAULTS.passage_chars
    # When the model ends without a usable answer, open <answer> for it and allow this many more tokens.
    # Serving wants an answer; training rollouts turn it off so a malformed output is scored as it is.
    force_answer: bool = True
    answer_tokens: int = 32
    max_prompt_tokens: int | None = None  # the service's cap; PromptTooLong beyond it
    confidence_threshold: float = 0.5  # `confidence`, `either`: search when the answer's least likely token is below
    # `auto`: after the first answer, write its confidence into the context (<confidence>93</confidence>) for the
    # model to read before it decides; the decision stays the model's (issue #40's named variant).
    confidence_note: bool = False
    # With the note: search when the model's P(search) after it (1 - P(end of turn)) is above this, a cut calibrated
    # on dev as `confidence_threshold` is; None: the decision token the model samples decides (greedy: its argmax).
    decision_threshold: float | None = None
    # A search after a first answer: the answer after it is written from the question and the results alone (the first
    # answer, its note and the model's call stay in the trace but leave the context), as `always` reads. The world's
    # dev: a first answer in context anchors the one after the search (session 27, docs/results.md).
    read_fresh: bool = False
    search_mode: str | None = None  # one of the backend's modes (Milvus: bm25, dense, hybrid); None: its default
    client_search: bool = False  # end at a search (Trace.pending_search) for the caller to run, instead of running it
    domains: DomainFilter | None = None  # source filter: passages it does not allow never reach the model
    allowance: Allowance | None = None  # the search budget across requests, asked before each search
    search_budget_exhausted: bool = False  # the budget was spent before the request: answered as `never`, flagged

    @classmethod
    def from_defaults(cls, defaults: LoopDefaults, **overrides: object) -> LoopOptions:
        base: dict[str, object] = {
            "max_searches": defaults.max_searches,
            "top_k": defaults.top_k,
            "max_tokens": defaults.max_tokens,
            "temperature": defaults.temperature,
            "passage_chars": defaults.passage_chars,
        }
        if defaults.confidence_threshold is not None:
            base["confidence_threshold"] = defaults.confidence_threshold
        if defaults.policy is not None:
            base["policy"] = SearchPolicy(defaults.policy)
        if defaults.confidence_note is not None:
            base["confidence_note"] = defaults.confidence_note
        if defaults.decision_threshold is not None:
            base["decision_threshold"] = defaults.decision_threshold
        if defaults.read_fresh is not None:
            base["read_fresh"] = defaults.read_fresh
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)  # type: ignore[arg-type]
