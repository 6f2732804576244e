"""The Responses API read as chat (service.responses.convert.to_chat): items, tools, tool_choice, refusals."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sem.loop import SearchPolicy
from service.exceptions import InvalidRequest
from service.responses.convert import to_chat
from service.responses.protocol import ResponsesRequest

SEARCH = {"type": "function", "name": "search", "parameters": {"type": "object", "properties": {
    "query": {"type": "string"}}}}  # fmt: skip
TURN = "<think>I am not sure of this.</think>\n<answer>unknown</answer>\n<search> capital of Zubrowka </search>"


def read(**fields):
    return to_chat(ResponsesRequest.model_validate({"model": "m", **fields}))


def test_text_input_is_the_question() -> None:
    chat = read(input="Who wrote Hamlet?", instructions="Be brief.", max_output_tokens=32, temperature=0.5)
    assert [(m.role, m.text) for m in chat.messages] == [("user", "Who wrote Hamlet?")]
    assert (chat.max_completion_tokens, chat.temperature, chat.tools) == (32, 0.5, None)


def test_a_round_comes_back_as_chats_assistant_call_and_tool_message() -> None:
    """As a client sends a previous response's output back: reasoning, message, function_call, then its output."""
    chat = read(input=[
        {"role": "user", "content": "Capital of Zubrowka?"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": TURN}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "unknown"}]},
        {"type": "function_call", "call_id": "call_1", "name": "search", "arguments": '{"query": "Zubrowka"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "Lutz is the capital."},
    ], tools=[SEARCH])  # fmt: skip
    user, assistant, tool = chat.messages
    assert (user.role, assistant.role, tool.role) == ("user", "assistant", "tool")
    assert assistant.text == "unknown" and assistant.reasoning_content == TURN
    assert assistant.tool_calls[0].id == "call_1" and tool.tool_call_id == "call_1"
    assert tool.text == "Lutz is the capital."


def test_a_call_with_no_message_before_it_is_an_assistant_message_of_its_own() -> None:
    chat = read(input=[
        {"role": "user", "content": "Q?"},
        {"type": "function_call", "call_id": "c", "name": "search", "arguments": '{"query": "q"}'},
        {"type": "function_call_output", "call_id": "c", "output": "r"},
    ], tools=[SEARCH])  # fmt: skip
    assert chat.messages[1].content is None and chat.messages[1].tool_calls[0].id == "c"


@pytest.mark.parametrize(
    ("tools", "choice", "search", "chat_choice"),
    [
        ([{"type": "web_search"}], "required", SearchPolicy.always, None),  # SEM's own search, first
        ([{"type": "web_search_preview"}], "none", SearchPolicy.never, None),
        ([{"type": "web_search"}], {"type": "web_search"}, SearchPolicy.always, None),
        ([{"type": "web_search"}], "auto", None, None),  # the model's own gate
        ([SEARCH], "required", None, "required"),  # the client's search: chat's tool rounds
        ([SEARCH], {"type": "function", "name": "search"}, None, "function"),
    ],
)
def test_tools_and_tool_choice(tools, choice, search, chat_choice) -> None:
    chat = read(input="Q?", tools=tools, tool_choice=choice)
    assert chat.sem.search == search
    named = chat.tool_choice.type if chat.tool_choice is not None and not isinstance(chat.tool_choice, str) else None
    assert (named or chat.tool_choice) == chat_choice
    assert bool(chat.tools) is (tools == [SEARCH])


def test_previous_response_id_is_refused_with_what_to_do() -> None:
    with pytest.raises(InvalidRequest, match="send the conversation in input") as info:
        read(input="Q?", previous_response_id="resp_1")
    assert info.value.param == "previous_response_id"


@pytest.mark.parametrize("body", [{"input": []}, {"input": "Q?", "tools": [{"type": "file_search"}]},
                                  {"input": [{"type": "mystery"}]}])  # fmt: skip
def test_what_sem_cannot_read_is_a_422(body) -> None:
    with pytest.raises(ValidationError):
        ResponsesRequest.model_validate({"model": "m", **body})
