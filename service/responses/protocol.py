"""Wire models of OpenAI's Responses API (`POST /v1/responses`), for what SEM does.

The request is read into a chat request (`service.responses.convert`), so both APIs share one reading of tools,
`tool_choice`, limits and SEM's options; request models ignore fields they do not know, as chat's do. Output items
follow OpenAI's: `web_search_call` for each search the service ran, `reasoning` with SEM's trace, `message` with the
answer (`output_text`, `url_citation` annotations), `function_call` for a search handed to the client.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.openai.protocol import SemOptions, SemReply
from service.protocol import SearchOut


class InputText(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["input_text", "output_text", "text", "summary_text", "reasoning_text"]
    text: str


class MessageItem(BaseModel):
    """A message in `input`: the user's question and the turns before it (system and developer: see `instructions`)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[InputText]

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)


class FunctionCallItem(BaseModel):
    """A search the service handed to the client, sent back in `input` before its output."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str
    id: str | None = None


class FunctionCallOutputItem(BaseModel):
    """What the client's search returned for `call_id`."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["function_call_output"]
    call_id: str
    output: str | list[InputText]

    @property
    def text(self) -> str:
        return self.output if isinstance(self.output, str) else "".join(part.text for part in self.output)


class ReasoningItem(BaseModel):
    """SEM's trace as a previous response gave it: sent back, the turn that searched is replayed as written."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["reasoning"]
    id: str | None = None
    summary: list[InputText] = Field(default_factory=list)
    content: list[InputText] | None = None

    @property
    def text(self) -> str:
        return "".join(part.text for part in self.content or [])


class OtherItem(BaseModel):
    """An item of a previous response that SEM needs nothing from (its own `web_search_call`s)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["web_search_call", "item_reference"]


InputItem = MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem | OtherItem


class FunctionTool(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class WebSearchTool(BaseModel):
    """OpenAI's hosted search, run by SEM: its own gated search over the served model's backend."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11"]


class NamedFunctionChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["function"]
    name: str


class HostedToolChoice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11"]


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    input: str | list[InputItem] = Field(min_length=1)
    instructions: str | None = Field(None, description="Ignored: SEM's system prompt is the template it was tuned on.")
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    stream: bool = False
    tools: list[FunctionTool | WebSearchTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedFunctionChoice | HostedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    previous_response_id: str | None = Field(None, description="Refused: SEM keeps no responses; send the input.")
    store: bool | None = Field(None, description="Accepted; nothing is stored.")
    metadata: dict[str, str] | None = None
    user: str | None = None
    sem: SemOptions = Field(default_factory=SemOptions)


class URLCitationAnnotation(BaseModel):
    type: Literal["url_citation"] = "url_citation"
    start_index: int
    end_index: int
    url: str
    title: str


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[URLCitationAnnotation] = Field(default_factory=list)


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    status: Literal["completed", "incomplete"] = "completed"
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class SearchAction(BaseModel):
    type: Literal["search"] = "search"
    query: str


class WebSearchCall(BaseModel):
    type: Literal["web_search_call"] = "web_search_call"
    id: str
    status: Literal["completed", "failed"] = "completed"
    action: SearchAction


class FunctionCallOut(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: Literal["completed"] = "completed"


class ReasoningText(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class ReasoningOut(BaseModel):
    type: Literal["reasoning"] = "reasoning"
    id: str
    summary: list[Any] = Field(default_factory=list)
    content: list[ReasoningText]


OutputItem = ReasoningOut | WebSearchCall | OutputMessage | FunctionCallOut


class ResponseUsage(BaseModel):
    input_tokens: int = Field(description="The prompt plus every inserted search result the model read.")
    input_tokens_details: dict[str, int] = Field(default_factory=lambda: {"cached_tokens": 0})
    output_tokens: int
    output_tokens_details: dict[str, int] = Field(default_factory=lambda: {"reasoning_tokens": 0})
    total_tokens: int
    num_search_queries: int = Field(description="SEM's: every search of the conversation, a handed-over one included.")


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"] = "max_output_tokens"


class Response(BaseModel):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["completed", "incomplete", "in_progress"]
    model: str
    output: list[OutputItem]
    usage: ResponseUsage | None = None
    error: None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    parallel_tool_calls: bool = False
    temperature: float | None = None
    top_p: float | None = None
    tool_choice: Any = "auto"
    tools: list[Any] = Field(default_factory=list)
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    truncation: Literal["disabled"] = "disabled"
    metadata: dict[str, str] = Field(default_factory=dict)
    previous_response_id: None = None
    store: bool = False
    search_results: list[SearchOut] = Field(default_factory=list)
    sem: SemReply | None = None
