"""Reading OpenAI tool calls into search rounds (service.openai.tools): what is accepted, and the 400s."""

from __future__ import annotations

import json

import pytest

from sem.loop import SearchPolicy
from service.exceptions import InvalidToolCall
from service.openai.protocol import ChatCompletionRequest
from service.openai.tools import client_rounds, question_index, search_tool, tool_policy

SEARCH = {"type": "function", "function": {"name": "search", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}, "k": {"type": "integer"}}}}}  # fmt: skip
QUESTION = {"role": "user", "content": "Capital of Zubrowka?"}


def call(call_id: str = "call_1", name: str = "search", arguments: str = '{"q": "capital of Zubrowka"}') -> dict:
    function = {"name": name, "arguments": arguments}
    return {
        "role": "assistant",
        "content": "unknown",
        "tool_calls": [{"id": call_id, "type": "function", "function": function}],
    }


def answer(call_id: str = "call_1", text: str = "Lutz is the capital.") -> dict:
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def request(messages: list[dict], **fields) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": messages, "tools": [SEARCH], **fields})


def rounds_of(body: ChatCompletionRequest):
    return client_rounds(body.messages, question_index(body.messages), search_tool(body))


def test_a_round_trip_is_read_back() -> None:
    body = request([{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "ok"}, QUESTION,
                    call(), answer()])  # fmt: skip
    (done,) = rounds_of(body)
    assert (done.query, done.answer, done.result, done.call_id) == ("capital of Zubrowka", "unknown",
                                                                    "Lutz is the capital.", "call_1")  # fmt: skip
    assert question_index(body.messages) == 2


@pytest.mark.parametrize(
    ("tools", "sem", "name", "argument"),
    [
        ([SEARCH], {}, "search", "q"),  # the only string parameter
        ([{"type": "function", "function": {"name": "web_search"}}], {}, "web_search", "query"),
        ([{"type": "function", "function": {"name": "weather"}}], {}, None, None),  # no search tool: server searches
        (
            [
                {
                    "type": "function",
                    "function": {
                        "name": "kb",
                        "parameters": {
                            "type": "object",
                            "properties": {"query": {"type": "string"}, "lang": {"type": "string"}},
                        },
                    },
                }
            ],
            {"search_tool": "kb"},
            "kb",
            "query",
        ),
    ],
)
def test_the_search_tool_and_its_argument(tools, sem, name, argument) -> None:
    body = ChatCompletionRequest.model_validate({"model": "m", "messages": [QUESTION], "tools": tools, "sem": sem})
    tool = search_tool(body)
    assert (tool.name, tool.argument) == (name, argument) if name else tool is None


@pytest.mark.parametrize(
    ("choice", "policy"),
    [(None, None), ("auto", None), ("none", SearchPolicy.never),
     ("required", SearchPolicy.always), ({"type": "function", "function": {"name": "search"}}, SearchPolicy.always)],
)  # fmt: skip
def test_tool_choice_is_the_policy(choice, policy) -> None:
    body = request([QUESTION], tool_choice=choice)
    assert tool_policy(body, search_tool(body)) is policy


@pytest.mark.parametrize(
    ("messages", "fields", "param", "words"),
    [
        ([QUESTION, call(), answer("call_9")], {}, "messages.2.tool_call_id", "does not match"),
        ([QUESTION, answer()], {}, "messages.1.role", "no assistant tool call"),
        ([QUESTION, call()], {}, "messages", "no tool message"),
        ([QUESTION, call(), call("call_2"), answer("call_2")], {}, "messages.2.tool_calls", "no tool message"),
        ([QUESTION, call(name="weather"), answer()], {}, "messages.1.tool_calls.0.function.name", "weather"),
        ([QUESTION, call(arguments="{q:"), answer()], {}, "messages.1.tool_calls.0.function.arguments", "not JSON"),
        (
            [QUESTION, call(arguments=json.dumps({"q": ""})), answer()],
            {},
            "messages.1.tool_calls.0.function.arguments",
            "non-empty",
        ),
        (
            [QUESTION, call(), answer(), {"role": "user", "content": "and?"}, answer()],
            {},
            "messages.4.role",
            "no assistant tool call",
        ),
        ([QUESTION, call(), answer(), {"role": "system", "content": "x"}], {}, "messages.3.role", "search rounds"),
        ([QUESTION], {"sem": {"search_tool": "kb"}}, "sem.search_tool", "kb"),
        (
            [QUESTION],
            {"tool_choice": {"type": "function", "function": {"name": "kb"}}},
            "tool_choice.function.name",
            "kb",
        ),
    ],
)
def test_malformed_tool_messages_name_the_field(messages, fields, param, words) -> None:
    body = request(messages, **fields)
    with pytest.raises(InvalidToolCall) as info:
        rounds_of(body)
        tool_policy(body, search_tool(body))
    assert info.value.param == param and words in str(info.value)


def test_a_call_without_the_search_tool_is_refused() -> None:
    body = ChatCompletionRequest.model_validate({"model": "m", "messages": [QUESTION, call(), answer()]})
    with pytest.raises(InvalidToolCall) as info:
        rounds_of(body)
    assert info.value.param == "tools"


def test_a_search_tool_without_a_usable_parameter() -> None:
    tool = {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {
        "a": {"type": "string"}, "b": {"type": "string"}}}}}  # fmt: skip
    body = ChatCompletionRequest.model_validate({"model": "m", "messages": [QUESTION], "tools": [tool]})
    with pytest.raises(InvalidToolCall) as info:
        search_tool(body)
    assert info.value.param == "tools.0.function.parameters"
