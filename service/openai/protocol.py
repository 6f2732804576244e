"""Wire models of OpenAI's chat completions (`POST /v1/chat/completions`) and models list (`GET /v1/models`).

Request models ignore fields they do not know (OpenAI clients send many); SEM's own options travel under `sem`
(openai-python: `extra_body={"sem": {...}}`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, field_validator, model_serializer

from sem.loop import SearchPolicy
from service.protocol import SearchDomains, SearchOut, SearchRate, Usage, search_rate_validator


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    arguments: str = Field(description="The arguments as a JSON object, in a string (OpenAI's shape).")


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = Field(None, description="assistant: the searches it asked the client for.")
    tool_call_id: str | None = Field(None, description="tool: the call this message answers.")
    reasoning_content: str | None = Field(
        None,
        description="assistant: SEM's trace as it came back; sent back, the turn that searched is replayed as the "
        "model wrote it (else as the service kept it by the call's id).",
    )

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class SemOptions(BaseModel):
    """SEM's own per-request options."""

    model_config = ConfigDict(extra="forbid")

    search: SearchPolicy | None = Field(None, description="Default: the served model's own (auto, or confidence).")
    max_searches: int | None = Field(None, ge=0)
    top_k: int | None = Field(None, ge=1)
    search_mode: str | None = Field(
        None, description="One of the search backend's modes (milvus: bm25, dense or hybrid)."
    )
    confidence_threshold: float | None = Field(None, ge=0.0, le=1.0, description="`confidence` policy's threshold.")
    search_rate: SearchRate = None
    _rate_goes_with_confidence = search_rate_validator()

    search_tool: str | None = Field(
        None, description="The name of the tool in `tools` that is a search (default: `search` or `web_search`)."
    )
    search_domains: SearchDomains | None = Field(
        None, description="Where search may look: {allow: [domains], block: [domains]}, with the deployment's."
    )


class SemReply(BaseModel):
    """SEM's own news about a completion (absent when there is none)."""

    search_budget_exhausted: bool = Field(
        False, description="The search budget (the key's or the deployment's) was spent: answered without search."
    )
    first_answer: str | None = Field(None, description="The closed-book answer the decision was taken on.")
    confidence: float | None = Field(
        None,
        description="`confidence` policy: the first answer's least likely token's probability; it searched when "
        "this was below `confidence_threshold`.",
    )
    confidence_threshold: float | None = Field(None, description="The threshold the decision was taken against.")


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="A JSON schema of the arguments.")


class Tool(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    function: NamedFunction


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    max_tokens: int | None = Field(None, ge=1, description="Older name of max_completion_tokens.")
    min_tokens: int = Field(0, ge=0, description="vLLM's extension: fewest tokens before the model may stop.")
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1)
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="Sampling seed, for reproducible samples.")
    user: str | None = None
    tools: list[Tool] | None = Field(
        None, description="With a search function among them, the client runs the searches: see `tool_choice`."
    )
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        None, description="none: never search; required (or the search tool by name): search first; auto: decide."
    )
    parallel_tool_calls: bool | None = Field(None, description="SEM asks for one search at a time either way.")
    sem: SemOptions = Field(default_factory=SemOptions)

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("up to 4 non-empty stop sequences")
        return stops


class URLCitation(BaseModel):
    """OpenAI's `url_citation`: the span of `content` [start_index, end_index) a passage supports."""

    start_index: int
    end_index: int
    url: str = Field(description="The passage's URL where the backend has one, else its id (as in search_results).")
    title: str = Field(description="The passage's title; an untitled one's: its search's query and [rank].")


class Annotation(BaseModel):
    type: Literal["url_citation"] = "url_citation"
    url_citation: URLCitation


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = Field(description="The answer; with a tool call, the model's answer so far (or null).")
    tool_calls: list[ToolCall] | None = None
    reasoning_content: str | None = Field(
        None, description="What the model thought, searched and read (the whole trace with its tags)."
    )
    annotations: list[Annotation] | None = Field(
        None, description="The inserted passages the answer rests on, as OpenAI's url_citation annotations."
    )

    @model_serializer(mode="wrap")
    def _content_always(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """`content` is sent even when null (beside a tool call), as OpenAI sends it: the route drops other nulls."""
        message = handler(self)
        message.setdefault("content", None)
        return message


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length", "tool_calls"]
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    search_results: list[SearchOut] = Field(default_factory=list)
    sem: SemReply | None = None
    seed_honoured: bool | None = Field(
        None, description="false when `seed` was asked for but the engine sampled unseeded (absent otherwise)."
    )


class DeltaFunctionCall(BaseModel):
    name: str | None = None
    arguments: str | None = None


class DeltaToolCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: DeltaFunctionCall


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None
    annotations: list[Annotation] | None = None  # on the finishing chunk, once the answer is final


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: Literal["stop", "length", "tool_calls"] | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    search_results: list[SearchOut] | None = None
    sem: SemReply | None = None  # on the finishing chunk, when there is news


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "sem"
    root: str | None = None
    parent: str | None = Field(None, description="For an adapter: the model it runs over (as vLLM lists LoRAs).")
    default_search: str | None = Field(None, description="The search policy of a request that names none.")
    confidence_threshold: float | None = Field(None, description="The `confidence` policy's threshold.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
