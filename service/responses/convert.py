"""The Responses API in terms of chat completions: a request read into the chat request it means (one reading of
tools, `tool_choice`, limits and SEM's options for both APIs), and a finished trace written as a response."""

from __future__ import annotations

import time
from typing import Any

from sem.loop import SearchPolicy, SearchRecord, Trace
from service.exceptions import InvalidRequest
from service.openai.protocol import ChatCompletionRequest
from service.openai.serving import annotations_of, sem_reply
from service.openai.tools import SearchTool, tool_call_of
from service.responses.protocol import (
    FunctionCallItem,
    FunctionCallOut,
    FunctionCallOutputItem,
    FunctionTool,
    HostedToolChoice,
    IncompleteDetails,
    MessageItem,
    NamedFunctionChoice,
    OutputItem,
    OutputMessage,
    OutputText,
    ReasoningItem,
    ReasoningOut,
    ReasoningText,
    Response,
    ResponsesRequest,
    ResponseUsage,
    SearchAction,
    URLCitationAnnotation,
    WebSearchCall,
    WebSearchTool,
)
from service.traces import search_out, usage_of


def to_chat(body: ResponsesRequest) -> ChatCompletionRequest:
    """The chat request a Responses request means: `input` as messages (a function call joins the assistant message
    before it; a reasoning item SEM gave is that message's `reasoning_content`), function tools as chat's, and the
    hosted search tool as SEM's own search (`tool_choice` for it: required = always, none = never)."""
    if body.previous_response_id is not None:
        raise InvalidRequest("SEM keeps no responses: send the conversation in input instead of previous_response_id",
                             param="previous_response_id")  # fmt: skip
    items = [MessageItem(role="user", content=body.input)] if isinstance(body.input, str) else body.input
    messages: list[dict[str, Any]] = []
    reasoning: str | None = None
    for item in items:
        if isinstance(item, ReasoningItem):
            reasoning = item.text or None
        elif isinstance(item, MessageItem):
            messages.append({"role": item.role, "content": item.text})
            if item.role == "assistant":
                messages[-1]["reasoning_content"], reasoning = reasoning, None
        elif isinstance(item, FunctionCallItem):
            function = {"name": item.name, "arguments": item.arguments}
            call = {"id": item.call_id, "type": "function", "function": function}
            last = messages[-1] if messages else None
            if last is None or last["role"] != "assistant" or last.get("tool_calls"):
                last = {"role": "assistant", "content": None, "reasoning_content": reasoning}
                messages.append(last)
            last["tool_calls"], reasoning = [call], None
        elif isinstance(item, FunctionCallOutputItem):
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text})
    functions = [t for t in body.tools or [] if isinstance(t, FunctionTool)]
    hosted = any(isinstance(t, WebSearchTool) for t in body.tools or [])
    sem = body.sem.model_copy()
    choice: Any = body.tool_choice
    if isinstance(choice, NamedFunctionChoice):
        choice = {"type": "function", "function": {"name": choice.name}}
    elif isinstance(choice, HostedToolChoice) or (hosted and choice == "required"):
        sem.search, choice = sem.search or SearchPolicy.always, None
    elif hosted and choice == "none" and not functions:
        sem.search, choice = sem.search or SearchPolicy.never, None
    tools = [{"type": "function", "function": t.model_dump(exclude_none=True, exclude={"type"})} for t in functions]
    return ChatCompletionRequest.model_validate({
        "model": body.model, "messages": messages or [{"role": "user", "content": ""}], "tools": tools or None,
        "tool_choice": choice if tools else None, "max_completion_tokens": body.max_output_tokens,
        "temperature": body.temperature, "top_p": body.top_p, "user": body.user,
        "parallel_tool_calls": body.parallel_tool_calls, "sem": sem,
    })  # fmt: skip


def response_id(request_id: str) -> str:
    return "resp_" + request_id.rsplit("-", 1)[-1]


def web_search_call(key: str, n: int, record: SearchRecord) -> WebSearchCall:
    status = "failed" if record.error else "completed"
    return WebSearchCall(id=f"ws_{key}_{n}", status=status, action=SearchAction(query=record.query))


def output_items(trace: Trace, tool: SearchTool | None, passage_chars: int | None) -> list[OutputItem]:
    """A finished trace as output items: a `web_search_call` for each search the service ran, SEM's trace as a
    `reasoning` item, the answer as a `message` (unless the model handed a search over before answering), and the
    handed-over search as a `function_call`."""
    key = trace.request_id.rsplit("-", 1)[-1]
    items: list[OutputItem] = [web_search_call(key, n, s) for n, s in enumerate(trace.searches) if not s.client]
    items.append(ReasoningOut(id=f"rs_{key}", content=[ReasoningText(text=trace.completion)]))
    call = tool_call_of(trace, tool) if tool else None
    answer = trace.answer
    if answer or call is None:
        cited = annotations_of(trace, answer, passage_chars) or []
        notes = [URLCitationAnnotation(**a.url_citation.model_dump()) for a in cited]
        text = OutputText(text=answer, annotations=notes)
        status = "incomplete" if trace.finish_reason == "length" else "completed"
        items.append(OutputMessage(id=f"msg_{key}", status=status, content=[text]))
    if call is not None:
        items.append(FunctionCallOut(id=f"fc_{key}", call_id=call.id, name=call.function.name,
                                     arguments=call.function.arguments))  # fmt: skip
    return items


def to_response(body: ResponsesRequest, trace: Trace, model: str, tool: SearchTool | None,
                passage_chars: int | None = None, threshold: float | None = None) -> Response:  # fmt: skip
    usage = usage_of(trace)
    cut = trace.finish_reason == "length"
    return Response(
        id=response_id(trace.request_id), created_at=int(time.time()), status="incomplete" if cut else "completed",
        model=model, output=output_items(trace, tool, passage_chars),
        usage=ResponseUsage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens,
                            total_tokens=usage.total_tokens, num_search_queries=usage.num_search_queries),
        incomplete_details=IncompleteDetails() if cut else None, instructions=body.instructions,
        max_output_tokens=body.max_output_tokens, temperature=body.temperature, top_p=body.top_p,
        tool_choice=body.tool_choice or "auto", tools=[t.model_dump() for t in body.tools or []],
        metadata=body.metadata or {}, search_results=[search_out(s) for s in trace.searches],
        sem=sem_reply(trace, threshold),
    )  # fmt: skip
