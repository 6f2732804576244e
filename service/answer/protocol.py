"""Wire models of `POST /v1/answer`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sem.loop import SearchPolicy
from service.protocol import CitationOut, SearchDomains, SearchOut, SearchRate, Usage, search_rate_validator


class AnswerRequest(BaseModel):
    """`POST /v1/answer`: one question in, one answer out."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, description="The question to answer.")
    model: str | None = Field(
        None, description="A served model's name (`GET /v1/models`); default: the server's default model."
    )
    search: SearchPolicy | None = Field(
        None,
        description="auto: the model decides; never: no search; always: one search first; confidence: search when "
        "the closed-book answer's confidence is below the threshold. Default: the served model's own "
        "(`GET /v1/models` lists it as `default_search`).",
    )
    confidence_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="`confidence` policy's threshold (default: the model's calibration)."
    )
    search_rate: SearchRate = None
    _rate_goes_with_confidence = search_rate_validator()

    max_searches: int | None = Field(None, ge=0, description="Search budget for this question.")
    top_k: int | None = Field(None, ge=1, description="Passages per search.")
    search_mode: str | None = Field(
        None, description="One of the search backend's modes (milvus: bm25, dense, hybrid); default: its own."
    )
    search_domains: SearchDomains | None = Field(
        None, description="Where search may look: {allow: [domains], block: [domains]}, with the deployment's."
    )
    max_tokens: int | None = Field(None, ge=1, description="Most tokens to generate, over all turns.")
    min_tokens: int = Field(0, ge=0, description="Fewest tokens to generate before the model may stop (vLLM's).")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="Sampling temperature (0 = greedy).")
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="Sampling seed, for reproducible answers.")
    return_trace: bool = Field(False, description="Include the full generated text with tags.")


class TraceOut(BaseModel):
    text: str = Field(description="Everything after the prompt: generated text and inserted results.")
    answers: list[str] = Field(description="Every <answer> in order (first answer, post-search answers).")
    follows_template: bool
    refused_searches: int
    engine_calls: int
    prefill_tokens: int = Field(description="Tokens the engine prefilled over all its requests, prefix cache assumed.")


class AnswerResponse(BaseModel):
    id: str
    object: Literal["answer"] = "answer"
    created: int
    model: str
    answer: str
    search_count: int
    searches: list[SearchOut]
    search_errors: list[str] = Field(default_factory=list, description="Searches that failed (degraded).")
    search_budget_exhausted: bool = Field(
        False, description="The search budget (the key's or the deployment's) was spent: answered without search."
    )
    citations: list[CitationOut] = Field(
        default_factory=list, description="The inserted passages the answer rests on (its words are in them)."
    )
    confidence: float | None = Field(
        None, description="`confidence` policy: the probability of the first answer's least likely token."
    )
    seed_honoured: bool | None = Field(
        None, description="false when `seed` was asked for but the engine sampled unseeded (absent otherwise)."
    )
    finish_reason: str
    usage: Usage
    latency_ms: float
    trace: TraceOut | None = None
