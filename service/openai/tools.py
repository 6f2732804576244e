"""The search decision as an OpenAI tool call: the client runs its own search (any agent framework can).

A request whose `tools` hold a search function (named `search` or `web_search`, or the one `sem.search_tool` names)
is served with `client_search`: when the model opens `<search>`, the completion ends with `finish_reason:
"tool_calls"` and one call whose single string argument is the query. The client answers with a `role: "tool"`
message; the next request carries the whole conversation and the loop rebuilds the template from it: the model's turn
that searched (from the assistant message's `reasoning_content` when the client sends it back, else as the service
kept it by the call's id, `service.tool_turns`, else rebuilt from the answer and the query), then the tool's text as
a neutralised `<result>`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sem import protocol
from sem.loop import ClientSearch, SearchPolicy, Trace
from service.exceptions import InvalidToolCall
from service.openai.protocol import ChatCompletionRequest, ChatMessage, FunctionCall, NamedToolChoice, ToolCall
from service.tool_turns import call_id_of

SEARCH_TOOL_NAMES = ("search", "web_search")


@dataclass(frozen=True, slots=True)
class SearchTool:
    """The client's search function: its name and the argument that carries the query."""

    name: str
    argument: str

    def call(self, query: str, call_id: str) -> ToolCall:
        arguments = json.dumps({self.argument: query}, ensure_ascii=False)
        return ToolCall(id=call_id, function=FunctionCall(name=self.name, arguments=arguments))


def search_tool(body: ChatCompletionRequest) -> SearchTool | None:
    """The search function among `tools`, or None (then the server searches, as without tools)."""
    tools = body.tools or []
    wanted = body.sem.search_tool
    for i, tool in enumerate(tools):
        name = tool.function.name
        if name == wanted or (wanted is None and name in SEARCH_TOOL_NAMES):
            return SearchTool(name, _query_argument(tool.function.parameters, f"tools.{i}.function.parameters"))
    if wanted is not None:
        raise InvalidToolCall(f"sem.search_tool names {wanted!r}, which is not a function in tools",
                              param="sem.search_tool")  # fmt: skip
    return None


def _query_argument(schema: dict | None, param: str) -> str:
    """The parameter that takes the query: the schema's only string property, else one called `query`."""
    properties = (schema or {}).get("properties") or {}
    if not isinstance(properties, dict) or not properties:
        return "query"
    strings = [name for name, spec in properties.items() if isinstance(spec, dict) and spec.get("type") == "string"]
    if len(strings) == 1:
        return strings[0]
    if "query" in properties:
        return "query"
    raise InvalidToolCall(
        f"the search tool needs one string parameter, or one called 'query'; it has {sorted(properties)}", param=param
    )


def tool_policy(body: ChatCompletionRequest, tool: SearchTool) -> SearchPolicy | None:
    """tool_choice -> the loop's policy: none = never, required (or the tool by name) = always, auto = sem.search
    (None: the served model's default)."""
    choice = body.tool_choice
    if isinstance(choice, NamedToolChoice):
        if choice.function.name != tool.name:
            raise InvalidToolCall(
                f"tool_choice names {choice.function.name!r}; the only tool SEM calls is its search, {tool.name!r}",
                param="tool_choice.function.name",
            )
        return SearchPolicy.always
    if choice == "none":
        return SearchPolicy.never
    if choice == "required":
        return SearchPolicy.always
    return body.sem.search


def question_index(messages: list[ChatMessage]) -> int:
    """Where the question is: the last user message (search rounds may follow it)."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user":
            return i
    raise InvalidToolCall("the conversation has no user message to answer", param="messages")


def client_rounds(messages: list[ChatMessage], start: int, tool: SearchTool | None) -> list[ClientSearch]:
    """The search rounds after the question: each an assistant message with one call of the search tool, then the
    tool message that answers it. Anything else there is a 400 naming the message."""
    rounds: list[ClientSearch] = []
    pending: tuple[ToolCall, str | None, str | None] | None = None
    for i in range(start + 1, len(messages)):
        message, at = messages[i], f"messages.{i}"
        if message.role == "assistant" and message.tool_calls:
            if tool is None:
                raise InvalidToolCall("an assistant tool call, but no search tool in tools", param="tools")
            if pending is not None:
                raise InvalidToolCall(f"the tool call {pending[0].id!r} has no tool message answering it",
                                      param=f"{at}.tool_calls")  # fmt: skip
            if len(message.tool_calls) != 1:
                raise InvalidToolCall("one tool call per assistant message: SEM searches one query at a time",
                                      param=f"{at}.tool_calls")  # fmt: skip
            call = message.tool_calls[0]
            if call.function.name != tool.name:
                raise InvalidToolCall(f"a call of {call.function.name!r}; the search tool is {tool.name!r}",
                                      param=f"{at}.tool_calls.0.function.name")  # fmt: skip
            _query_of(call, tool, f"{at}.tool_calls.0.function.arguments")
            pending = (call, message.text or None, message.reasoning_content)
        elif message.role == "tool":
            if pending is None:
                raise InvalidToolCall("a tool message with no assistant tool call before it", param=f"{at}.role")
            call, answer, reasoning = pending
            if message.tool_call_id != call.id:
                raise InvalidToolCall(
                    f"tool_call_id {message.tool_call_id!r} does not match the call before it, {call.id!r}",
                    param=f"{at}.tool_call_id",
                )
            query = _query_of(call, tool, f"messages.{i - 1}.tool_calls.0.function.arguments")  # type: ignore[arg-type]
            turn = protocol.search_turn(reasoning, query) if reasoning else None  # SEM's own reply, sent back
            rounds.append(ClientSearch(query=query, result=message.text, answer=answer, call_id=call.id, turn=turn))
            pending = None
        else:
            raise InvalidToolCall(
                f"a {message.role!r} message after the question: only search rounds (an assistant tool call, then "
                "its tool message) may follow the last user message",
                param=f"{at}.role",
            )
    if pending is not None:
        raise InvalidToolCall(f"the tool call {pending[0].id!r} has no tool message answering it: send its result "
                              "as a role 'tool' message", param="messages")  # fmt: skip
    return rounds


def _query_of(call: ToolCall, tool: SearchTool, param: str) -> str:
    try:
        arguments = json.loads(call.function.arguments)
    except json.JSONDecodeError as exc:
        raise InvalidToolCall(f"the arguments are not JSON: {exc}", param=param) from exc
    query = arguments.get(tool.argument) if isinstance(arguments, dict) else None
    if not isinstance(query, str) or not query.strip():
        raise InvalidToolCall(f"the arguments need a non-empty string {tool.argument!r}", param=param)
    return query


def tool_call_of(trace: Trace, tool: SearchTool) -> ToolCall | None:
    """The call to send when the loop stopped at a search for the client."""
    return None if trace.pending_search is None else tool.call(trace.pending_search, call_id_of(trace.request_id))
