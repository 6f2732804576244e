"""Typed responses. Lenient (`extra="allow"`): a newer server may add fields without breaking older clients."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

SearchPolicy = Literal["auto", "never", "always", "confidence", "either"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow")


class Passage(_Model):
    id: str
    title: str = ""
    text: str
    score: float | None = None


class Search(_Model):
    query: str
    passages: list[Passage]
    cached: bool = False
    latency_ms: float = 0.0
    error: str | None = None
    forced: bool = False
    client: bool = False  # run by the client (a tool call), e.g. by `answer_with`
    dropped: int = 0  # passages the source filter (`search_domains`) kept from the model


class Usage(_Model):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    num_search_queries: int = 0


class Trace(_Model):
    text: str
    answers: list[str] = []
    follows_template: bool = False
    refused_searches: int = 0
    engine_calls: int = 0
    prefill_tokens: int = 0


class Citation(_Model):
    """A passage the answer rests on: `searches[search].passages[rank - 1]`, whose `quote` holds `answer[start:end]`."""

    passage_id: str
    title: str = ""
    url: str | None = None  # where the search backend has one
    search: int
    rank: int
    start: int
    end: int
    quote: str = ""
    quote_start: int = 0
    quote_end: int = 0


class Answer(_Model):
    id: str
    model: str
    answer: str
    search_count: int
    searches: list[Search] = []
    search_errors: list[str] = []
    citations: list[Citation] = []  # the inserted passages the answer rests on
    search_budget_exhausted: bool = False  # the search budget was spent: answered without search
    confidence: float | None = None  # the `confidence` policy's score of the first answer
    finish_reason: str
    usage: Usage
    latency_ms: float = 0.0
    trace: Trace | None = None


class FunctionCall(_Model):
    name: str
    arguments: str  # a JSON object, in a string (OpenAI's shape)


class ToolCall(_Model):
    id: str
    type: str = "function"
    function: FunctionCall


class URLCitation(_Model):
    start_index: int  # the span of `content` the passage supports
    end_index: int
    url: str  # the passage's URL, else its id in `search_results`
    title: str = ""


class Annotation(_Model):
    type: str = "url_citation"
    url_citation: URLCitation


class ChatMessage(_Model):
    role: str
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None
    annotations: list[Annotation] | None = None  # OpenAI's url_citation: the passages the answer rests on


class SemReply(_Model):
    """SEM's own news about a completion (chat's `sem` extension)."""

    search_budget_exhausted: bool = False


class ChatChoice(_Model):
    index: int = 0
    message: ChatMessage
    finish_reason: str | None = None


class ChatCompletion(_Model):
    id: str
    model: str
    created: int
    choices: list[ChatChoice]
    usage: Usage
    search_results: list[Search] = []
    sem: SemReply | None = None

    @property
    def content(self) -> str:
        return self.choices[0].message.content or ""


class ChunkDelta(_Model):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI's pieces: index, then id/name, then the arguments
    annotations: list[Annotation] | None = None  # on the finishing chunk


class ChunkChoice(_Model):
    index: int = 0
    delta: ChunkDelta
    finish_reason: str | None = None


class ChatCompletionChunk(_Model):
    id: str
    model: str
    created: int
    choices: list[ChunkChoice] = []
    usage: Usage | None = None
    search_results: list[Search] | None = None
    sem: SemReply | None = None  # on the finishing chunk, when there is news


class Model(_Model):
    """A served model (`GET /v1/models`): the engine's own, or an adapter over it (`parent`)."""

    id: str
    owned_by: str = ""
    root: str | None = None
    parent: str | None = None
    default_search: str | None = None
    confidence_threshold: float | None = None
