"""OpenAI's Responses API with the real model, the real server and real clients: openai-python (plain, streamed, the
client's own search as a function tool), the OpenAI Agents SDK with a function tool, and LangChain's ChatOpenAI on
the Responses API reading citations."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

from sem import protocol
from tests.conftest import SEARCH_TOOL

HAMLET = "Who wrote Hamlet?"
QUESTION = "What is the capital of Zubrowka?"
FACT = "Zubrowka is a small country in Europe. The capital of Zubrowka is Lutz, founded in 1802."
FUNCTION = {"type": "function", **SEARCH_TOOL["function"]}  # the Responses API's flat function tool
HOSTED = {"tools": [{"type": "web_search"}], "tool_choice": "required", "max_output_tokens": 64}


def items(response, kind: str) -> list:
    return [item for item in response.output if item.type == kind]


def test_the_hosted_search_is_sems_own(oai: openai.OpenAI, model: str) -> None:
    """`web_search` runs SEM's search: a web_search_call item with its query, the answer as a message whose
    url_citation annotations name passages of that search and span the answer's text; the trace as reasoning."""
    response = oai.responses.create(model=model, input=HAMLET, **HOSTED)
    (search,) = items(response, "web_search_call")
    assert search.status == "completed" and search.action.query == HAMLET
    (message,) = items(response, "message")
    text = message.content[0].text
    assert response.status == "completed" and response.output_text == text and text
    (reasoning,) = items(response, "reasoning")
    assert protocol.final_answer(reasoning.content[0].text) == text  # the message is the trace's answer
    assert response.usage.model_extra["num_search_queries"] == 1
    passages = {p["id"] for s in response.model_extra["search_results"] for p in s["passages"]}
    for note in message.content[0].annotations:
        assert note.url in passages and 0 <= note.start_index < note.end_index <= len(text)


def test_a_stream_is_the_same_response_in_typed_events(oai: openai.OpenAI, model: str) -> None:
    """openai-python's stream helper assembles the events into the response the plain call returns."""
    plain = oai.responses.create(model=model, input=HAMLET, **HOSTED)
    with oai.responses.stream(model=model, input=HAMLET, **HOSTED) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert kinds.index("response.web_search_call.completed") < kinds.index("response.output_text.delta")
    assert final.output_text == plain.output_text and [i.type for i in final.output] == [i.type for i in plain.output]


def test_a_function_tool_hands_the_search_to_the_client(oai: openai.OpenAI, model: str) -> None:
    """The client's search as a function tool: a function_call item, then the output items sent back with the
    function_call_output; the tool's text reaches the answer, and the server ran no search of its own."""
    first = oai.responses.create(model=model, input=QUESTION, tools=[FUNCTION], tool_choice="required",
                                 max_output_tokens=48)  # fmt: skip
    (call,) = items(first, "function_call")
    assert call.name == "search" and json.loads(call.arguments) == {"query": QUESTION}
    assert not items(first, "web_search_call") and first.usage.model_extra["num_search_queries"] == 1
    back = [{"role": "user", "content": QUESTION}, *(i.model_dump(exclude_none=True) for i in first.output),
            {"type": "function_call_output", "call_id": call.call_id, "output": FACT}]  # fmt: skip
    final = oai.responses.create(model=model, input=back, tools=[FUNCTION], tool_choice="required",
                                 max_output_tokens=48)  # fmt: skip
    assert "Lutz" in final.output_text and not items(final, "function_call")
    assert [s["client"] for s in final.model_extra["search_results"]] == [True]


def test_errors_come_in_openais_shape(oai: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(model=model, input=QUESTION, previous_response_id="resp_123")
    assert info.value.body["param"] == "previous_response_id" and "input" in info.value.body["message"]
    with pytest.raises(openai.NotFoundError) as missing:
        oai.responses.create(model="no-such-model", input=QUESTION)
    assert missing.value.body["code"] == "model_not_found"


def test_an_agent_of_the_openai_agents_sdk_runs_its_tool_through_sem(service: str, model: str) -> None:
    """An Agents SDK agent whose model is SEM (Responses API) with a function tool: SEM's gate hands the search to
    the agent's tool (here `always`, so the call is sure to come) and the answer reads what the tool returned."""
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)  # no traces sent to OpenAI
    queries: list[str] = []

    @function_tool
    def search(query: str) -> str:
        """Search the knowledge base."""
        queries.append(query)
        return FACT

    client = openai.AsyncOpenAI(base_url=f"{service}/v1", api_key="x", max_retries=0)
    agent = Agent(name="sem", instructions="Answer briefly.", tools=[search],
                  model=OpenAIResponsesModel(model=model, openai_client=client),
                  model_settings=ModelSettings(max_tokens=48, extra_body={"sem": {"search": "always"}}))  # fmt: skip
    result = asyncio.run(Runner.run(agent, QUESTION, max_turns=4))
    assert queries == [QUESTION] and "Lutz" in result.final_output


def test_an_agent_with_the_hosted_search_gets_sems_citations(service: str, model: str) -> None:
    """The Agents SDK's own WebSearchTool (OpenAI's hosted search) is SEM's gated search; the agent's message keeps
    the url_citation annotations, each naming a passage of that search."""
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, WebSearchTool, set_tracing_disabled
    from agents.items import MessageOutputItem

    set_tracing_disabled(True)
    client = openai.AsyncOpenAI(base_url=f"{service}/v1", api_key="x", max_retries=0)
    agent = Agent(name="sem", tools=[WebSearchTool()], model=OpenAIResponsesModel(model=model, openai_client=client),
                  model_settings=ModelSettings(max_tokens=64, tool_choice="web_search"))  # fmt: skip
    result = asyncio.run(Runner.run(agent, HAMLET, max_turns=2))
    (message,) = [item.raw_item for item in result.new_items if isinstance(item, MessageOutputItem)]
    notes = message.content[0].annotations
    assert result.final_output and notes and all(n.type == "url_citation" and n.url.startswith("wiki:") for n in notes)


def test_langchain_on_the_responses_api_reads_the_citations(service: str, model: str) -> None:
    """LangChain's ChatOpenAI with use_responses_api=True and the hosted search: the answer's text blocks carry the
    url_citation annotations SEM wrote."""
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=model, base_url=f"{service}/v1", api_key="x", use_responses_api=True, max_tokens=64,
                     max_retries=0).bind_tools([{"type": "web_search"}], tool_choice="required")  # fmt: skip
    reply = llm.invoke(HAMLET)
    blocks = [b for b in reply.content if isinstance(b, dict) and b.get("type") == "text"]
    notes = [n for b in blocks for n in b.get("annotations") or []]
    assert reply.text and notes and all(n.get("url", "").startswith("wiki:") for n in notes)
