"""The whole app in process, on a scripted engine: admission, the deadline, the error table, the request limits, the
SSE framing of chat completions and OpenAI tool calls, through HTTP as a client sees them.

The real model serves the same routes in tests/integration (test_service_http, test_openai_compat, test_hardening,
test_tool_calls); there a behaviour depends on what the model writes and a check takes a subprocess server. Here the
replies are scripted (`ReplayEngine`), so each branch happens on purpose and the whole file runs in seconds.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from sem.engines.base import Delta
from sem.engines.replay import ReplayEngine
from sem.settings import Settings
from service.app import create_app
from tests.conftest import SEARCH_TOOL

MODEL = "replay"  # the scripted engine's name, which the app serves
HAMLET = ["<think>unsure</think><answer>Marlowe</answer><search>Hamlet tragedy written by</search>",
          "<answer>William Shakespeare</answer>"]  # fmt: skip
ERROR_FIELDS = {"message", "type", "param", "code"}
ZUBROWKA = "What is the capital of Zubrowka?"
FACT = "Zubrowka is a small country in Europe. The capital of Zubrowka is Lutz, founded in 1802."


class HeldEngine(ReplayEngine):
    """A replay engine whose requests wait until the test lets them go: answers that are still running."""

    def __init__(self, tokenizer: Any, replies: list[str]) -> None:
        super().__init__(tokenizer, replies)
        self.release = threading.Event()  # set from the test's thread
        self.started = 0  # requests that reached the engine

    async def generate(self, prompt_ids, options, *, request_id) -> AsyncIterator[Delta]:
        self.started += 1
        while not self.release.is_set():
            await asyncio.sleep(0.005)
        async for delta in super().generate(prompt_ids, options, request_id=request_id):
            yield delta


@pytest.fixture
def app_settings(settings: Settings, tiny_corpus: Path) -> Settings:
    return settings.model_copy(update={"corpus": tiny_corpus})


def with_limits(settings: Settings, **limits: Any) -> Settings:
    return settings.model_copy(update={"limits": settings.limits.model_copy(update=limits)})


@contextmanager
def serve(settings: Settings, engine: ReplayEngine) -> Iterator[TestClient]:
    """The app on `engine`, ready (its index loaded): a client of it."""
    with TestClient(create_app(settings, engine=engine)) as client:
        wait_until(lambda: client.get("/readyz").status_code == 200, "the app did not get ready")
        yield client


def wait_until(condition: Callable[[], bool], why: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(why)
        time.sleep(0.01)


def openai_error(reply: httpx.Response, status: int) -> dict[str, Any]:
    """The error object of an error reply, checked to be OpenAI's shape."""
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_FIELDS, body
    assert body["error"]["message"] and body["error"]["type"]
    return body["error"]


def chat(content: str | None = "Who wrote Hamlet?", **fields: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": content}] if content is not None else []
    return {"model": MODEL, "messages": messages, **fields}


def sse(reply: httpx.Response) -> list[dict[str, Any]]:
    """The chunks of an SSE reply: every line a `data:` frame or blank, every frame JSON, `[DONE]` once and last."""
    assert reply.status_code == 200, reply.read()
    assert reply.headers["content-type"].startswith("text/event-stream")
    lines = list(reply.iter_lines())
    assert all(line == "" or line.startswith("data: ") for line in lines), lines
    frames = [line.removeprefix("data: ") for line in lines if line]
    assert frames[-1] == "[DONE]" and frames.count("[DONE]") == 1
    return [json.loads(frame) for frame in frames[:-1]]


# ---- answers through both APIs -----------------------------------------------------------------------------


def test_an_answer_with_a_search_through_both_apis(app_settings, tokenizer) -> None:
    engine = ReplayEngine(tokenizer, HAMLET * 2)
    with serve(app_settings, engine) as client:
        body = {"question": "Who wrote Hamlet?", "search": "auto", "return_trace": True}
        reply = client.post("/v1/answer", json=body)
        assert reply.status_code == 200, reply.text
        answer = reply.json()
        assert answer["answer"] == "William Shakespeare" and answer["finish_reason"] == "stop"
        assert answer["search_count"] == 1 == answer["usage"]["num_search_queries"]
        (search,) = answer["searches"]
        assert search["query"] == "Hamlet tragedy written by" and search["passages"][0]["id"] == "hamlet"
        assert answer["trace"]["answers"] == ["Marlowe", "William Shakespeare"]
        assert "Hamlet is a tragedy written by William Shakespeare" in engine.contexts[1]  # the model read it

        reply = client.post("/v1/chat/completions", json=chat(sem={"search": "auto"}))
        assert reply.status_code == 200, reply.text
        completion = reply.json()
        assert completion["object"] == "chat.completion" and completion["model"] == MODEL
        (choice,) = completion["choices"]
        assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
        assert choice["message"]["content"] == "William Shakespeare"
        assert choice["message"]["reasoning_content"] == answer["trace"]["text"]  # the same script, the same trace
        usage = completion["usage"]
        assert usage["num_search_queries"] == 1
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        assert completion["search_results"][0]["passages"][0]["title"] == "Hamlet"


# ---- the runner: admission and the deadline ----------------------------------------------------------------


def test_a_full_queue_is_turned_away_with_503_and_retry_after(app_settings, tokenizer) -> None:
    """One answer runs, one waits for its slot, the next is refused at once (both APIs, a stream before its 200);
    once the running answer ends, the queued one runs too."""
    engine = HeldEngine(tokenizer, ["<answer>Shakespeare</answer>"] * 4)
    settings = with_limits(app_settings, max_concurrent=1, max_queued=1, request_timeout_s=10)  # a hang fails soon
    body = {"question": "Who wrote Hamlet?", "search": "never"}
    with serve(settings, engine) as client, ThreadPoolExecutor(2) as pool:
        admission = client.app.state.sem.admission  # type: ignore[attr-defined]
        try:
            running = pool.submit(client.post, "/v1/answer", json=body)
            wait_until(lambda: engine.started == 1, "the first answer did not reach the engine")
            queued = pool.submit(client.post, "/v1/answer", json=body)
            wait_until(lambda: admission.waiting == 1, "the second answer did not queue")
            assert engine.started == 1  # it waits for the slot, not in the engine

            refused = client.post("/v1/answer", json=body)
            assert openai_error(refused, 503)["code"] == "overloaded" and refused.headers["retry-after"] == "1"
            error = openai_error(refused, 503)
            assert error["type"] == "service_unavailable" and "1 answers running, 1 queued" in error["message"]
            stream = client.post("/v1/chat/completions", json=chat(stream=True, sem={"search": "never"}))
            assert openai_error(stream, 503)["code"] == "overloaded" and stream.headers["retry-after"] == "1"
        finally:
            engine.release.set()
        assert [f.result(timeout=10).status_code for f in (running, queued)] == [200, 200]
        assert running.result().json()["answer"] == "Shakespeare" and engine.started == 2
        assert client.post("/v1/answer", json=body).status_code == 200  # the queue drained: admitted again


def test_the_deadline_is_a_504_or_an_error_event_in_a_stream(app_settings, tokenizer) -> None:
    engine = HeldEngine(tokenizer, ["<answer>Shakespeare</answer>"] * 4)  # never released: the answer hangs
    settings = with_limits(app_settings, request_timeout_s=0.3)
    with serve(settings, engine) as client:
        # the held engine never answers: only the deadline can end the request, however slow or fast the machine
        reply = client.post("/v1/answer", json={"question": "Who wrote Hamlet?", "search": "never"})
        error = openai_error(reply, 504)
        assert (error["type"], error["code"]) == ("timeout", "deadline_exceeded")
        with client.stream("POST", "/v1/chat/completions", json=chat(stream=True, sem={"search": "never"})) as reply:
            chunks = sse(reply)  # the 200 went out before the deadline: the error travels in-band
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        assert set(chunks[-1]) == {"error"} and chunks[-1]["error"]["code"] == "deadline_exceeded"
        assert not any(c.get("choices") and c["choices"][0].get("finish_reason") for c in chunks)
        assert engine.started == 2 and engine.contexts == []  # both were cancelled while they waited


# ---- the error table (service/errors.py) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "status", "kind", "param", "code"),
    [
        ({"model": "gpt-4o"}, 404, "invalid_request_error", "model", "model_not_found"),
        ({"n": 2}, 400, "invalid_request_error", "n", None),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, 400, "invalid_request_error", "messages", None),
        ({"messages": []}, 422, "invalid_request_error", "messages", "too_short"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 422, "invalid_request_error", "messages.0.role",
         "literal_error"),
        ({"temperature": "hot"}, 422, "invalid_request_error", "temperature", "float_parsing"),
        ({"sem": {"search": "maybe"}}, 422, "invalid_request_error", "sem.search", "enum"),
        ({"sem": {"serch": "auto"}}, 422, "invalid_request_error", "sem.serch", "extra_forbidden"),
        ({"stop": ["a", "b", "c", "d", "e"]}, 422, "invalid_request_error", "stop", "value_error"),
        ({"sem": {"search_mode": "dense"}}, 400, "invalid_request_error", "sem.search_mode", None),
        ({"tools": [SEARCH_TOOL], "sem": {"search_tool": "lookup"}}, 400, "invalid_request_error", "sem.search_tool",
         "invalid_tool_call"),
    ],
)  # fmt: skip
def test_chat_errors_are_openai_error_objects(app_settings, tokenizer, payload, status, kind, param, code) -> None:
    engine = ReplayEngine(tokenizer, [])
    with serve(app_settings, engine) as client:
        error = openai_error(client.post("/v1/chat/completions", json={**chat(), **payload}), status)
        assert (error["type"], error["param"], error["code"]) == (kind, param, code)
        if status == 422:
            assert error["message"].startswith(f"{param}: ")  # it names the field
    assert engine.contexts == []  # refused before any generation


def test_the_error_table_around_the_routes(app_settings, tokenizer) -> None:
    with serve(with_limits(app_settings, max_body_bytes=2048), ReplayEngine(tokenizer, [])) as client:
        error = openai_error(client.post("/v1/chat/completions", json=chat(model="gpt-4o")), 404)
        assert "'gpt-4o' does not exist" in error["message"] and f"'{MODEL}'" in error["message"]

        big = client.post("/v1/answer", json={"question": "x" * 3000})  # refused by its Content-Length
        error = openai_error(big, 413)
        assert (error["type"], error["code"]) == ("invalid_request_error", "request_too_large")
        assert "2048 bytes (SEM_LIMITS__MAX_BODY_BYTES)" in error["message"]
        chunks = iter([b'{"question": "', b"y" * 3000, b'"}'])  # no Content-Length: counted as it arrives
        chunked = client.post("/v1/answer", content=chunks, headers={"content-type": "application/json"})
        assert openai_error(chunked, 413)["code"] == "request_too_large"

        malformed = client.post("/v1/answer", content=b"{not json", headers={"content-type": "application/json"})
        assert openai_error(malformed, 422)["code"] == "json_invalid"
        assert openai_error(client.get("/v1/nothing"), 404)["type"] == "not_found_error"
        assert openai_error(client.get("/v1/answer"), 405)["type"] == "invalid_request_error"


# ---- the limits (service/limits.py) ------------------------------------------------------------------------

LIMITS = {"max_question_chars": 40, "max_messages": 3, "max_searches": 2, "max_top_k": 3, "max_tokens": 64}


@pytest.mark.parametrize(
    ("route", "payload", "param", "says"),
    [
        ("/v1/answer", {"question": "x" * 41}, "question", "must be at most 40 characters (got 41)"),
        ("/v1/answer", {"question": "   "}, "question", "must not be blank"),
        ("/v1/answer", {"question": "q", "max_searches": 3}, "max_searches", "must be at most 2 (got 3)"),
        ("/v1/answer", {"question": "q", "top_k": 4}, "top_k", "must be at most 3 (got 4)"),
        ("/v1/answer", {"question": "q", "max_tokens": 65}, "max_tokens", "must be at most 64 (got 65)"),
        ("/v1/chat/completions", chat("x" * 41), "messages.0.content", "at most 40 characters"),
        ("/v1/chat/completions", chat(sem={"max_searches": 3}), "sem.max_searches", "at most 2"),
        ("/v1/chat/completions", chat(sem={"top_k": 4}), "sem.top_k", "at most 3"),
        ("/v1/chat/completions", chat(max_tokens=65), "max_tokens", "at most 64"),
        ("/v1/chat/completions", chat(max_completion_tokens=65), "max_completion_tokens", "at most 64"),
    ],
)
def test_a_request_over_a_limit_is_a_422_naming_the_field(app_settings, tokenizer, route, payload, param, says) -> None:
    engine = ReplayEngine(tokenizer, [])
    with serve(with_limits(app_settings, **LIMITS), engine) as client:
        error = openai_error(client.post(route, json=payload), 422)
        assert error["param"] == param and error["type"] == "invalid_request_error"
        assert error["message"].startswith(f"{param}: ") and says in error["message"]
    assert engine.contexts == []


def test_requests_at_the_limits_are_served(app_settings, tokenizer) -> None:
    engine = ReplayEngine(tokenizer, ["<answer>ok</answer>"] * 2)
    with serve(with_limits(app_settings, **LIMITS), engine) as client:
        at_cap = {"question": "x" * 40, "max_searches": 2, "top_k": 3, "max_tokens": 64, "search": "never"}
        assert client.post("/v1/answer", json=at_cap).status_code == 200
        three = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                 {"role": "user", "content": "x" * 40}]  # fmt: skip
        reply = client.post("/v1/chat/completions", json={**chat(), "messages": three, "sem": {"search": "never"}})
        assert reply.status_code == 200, reply.text
        four = client.post("/v1/chat/completions", json={**chat(), "messages": [*three, *three[:1]]})
        error = openai_error(four, 400)
        assert error["param"] == "messages" and "4 messages, more than the 3 allowed" in error["message"]


def test_a_prompt_over_the_token_cap_is_a_400_before_a_streams_200(app_settings, tokenizer) -> None:
    engine = ReplayEngine(tokenizer, [])
    with serve(with_limits(app_settings, max_prompt_tokens=16), engine) as client:
        for stream in (False, True):
            reply = client.post("/v1/chat/completions", json=chat(stream=stream, sem={"search": "never"}))
            error = openai_error(reply, 400)
            assert (error["code"], error["param"]) == ("context_length_exceeded", "messages")
            assert "more than the 16 allowed" in error["message"]
    assert engine.contexts == []


# ---- SSE framing of chat completions -----------------------------------------------------------------------


def test_a_streamed_completion_is_framed_as_openai_does(app_settings, tokenizer) -> None:
    engine = ReplayEngine(tokenizer, HAMLET * 2)
    body = chat(sem={"search": "auto"})
    with serve(app_settings, engine) as client:
        whole = client.post("/v1/chat/completions", json=body).json()
        streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
        with client.stream("POST", "/v1/chat/completions", json=streamed) as reply:
            assert reply.headers["cache-control"] == "no-cache"
            chunks = sse(reply)
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert all(c["model"] == MODEL for c in chunks) and chunks[0]["id"].startswith("chatcmpl-")
    first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
    assert chunks[0]["choices"] == [first]  # the role first

    *choices, usage = chunks
    deltas = [c["choices"][0]["delta"] for c in choices]
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    assert reasoning == whole["choices"][0]["message"]["reasoning_content"]  # streamed live, the whole trace
    assert "<search>Hamlet tragedy written by</search>" in reasoning and "Hamlet is a tragedy" in reasoning
    (searched,) = [c for c in choices if c.get("search_results")]
    assert searched["search_results"][0]["query"] == "Hamlet tragedy written by"
    (answer,) = [i for i, d in enumerate(deltas) if d.get("content")]  # the answer once, when it is final
    assert deltas[answer] == {"content": "William Shakespeare"}
    assert all("reasoning_content" not in d for d in deltas[answer:])
    finishes = [c["choices"][0].get("finish_reason") for c in choices]
    assert finishes[-1] == "stop" and finishes[:-1] == [None] * (len(choices) - 1)
    # the finish carries the citations, as the whole completion's message does (the passage holds the answer)
    cited = whole["choices"][0]["message"]["annotations"]
    assert cited and cited[0]["type"] == "url_citation" and deltas[-1] == {"annotations": cited}
    assert answer == len(choices) - 2  # the answer, then the finish
    assert usage["choices"] == [] and usage["usage"] == whole["usage"] and usage["usage"]["num_search_queries"] == 1


def test_without_include_usage_no_usage_chunk(app_settings, tokenizer) -> None:
    engine = ReplayEngine(tokenizer, ["<answer>Shakespeare</answer>"])
    with serve(app_settings, engine) as client:
        body = chat(stream=True, sem={"search": "never"})
        with client.stream("POST", "/v1/chat/completions", json=body) as reply:
            chunks = sse(reply)
    assert all(c["choices"] and "usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Shakespeare"


def test_a_stop_sequence_cuts_the_answer(app_settings, tokenizer) -> None:
    engine = ReplayEngine(tokenizer, ["<answer>William Shakespeare</answer>"] * 2)
    with serve(app_settings, engine) as client:
        body = chat(stop=" Shake", sem={"search": "never"})
        assert client.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]["content"] == "William"
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as reply:
            contents = [c["choices"][0]["delta"].get("content") for c in sse(reply)[1:]]
    assert [c for c in contents if c] == ["William"]


# ---- OpenAI tool calls (service/openai/tools.py) -----------------------------------------------------------


def tool_chat(messages: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": messages, "tools": [SEARCH_TOOL], "tool_choice": "auto",
            "sem": {"search": "auto"}, **fields}  # fmt: skip


def test_a_search_is_a_tool_call_and_the_tool_message_continues_it(app_settings, tokenizer) -> None:
    engine = ReplayEngine(tokenizer, ["<answer>unknown</answer><search>capital of Zubrowka</search>",
                                      "<answer>Lutz</answer>"])  # fmt: skip
    messages: list[dict[str, Any]] = [{"role": "user", "content": ZUBROWKA}]
    with serve(app_settings, engine) as client:
        first = client.post("/v1/chat/completions", json=tool_chat(messages))
        assert first.status_code == 200, first.text
        (choice,) = first.json()["choices"]
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "unknown"
        (call,) = choice["message"]["tool_calls"]
        assert call["id"].startswith("call_") and call["type"] == "function" and call["function"]["name"] == "search"
        assert json.loads(call["function"]["arguments"]) == {"query": "capital of Zubrowka"}
        assert first.json()["usage"]["num_search_queries"] == 1 and first.json()["search_results"] == []  # the client's
        assert len(engine.contexts) == 1

        messages += [choice["message"], {"role": "tool", "tool_call_id": call["id"], "content": FACT}]
        final = client.post("/v1/chat/completions", json=tool_chat(messages))
        assert final.status_code == 200, final.text
        (choice,) = final.json()["choices"]
        assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
        assert choice["message"]["content"] == "Lutz" and final.json()["usage"]["num_search_queries"] == 1
        (record,) = final.json()["search_results"]
        assert record["client"] and record["query"] == "capital of Zubrowka" and record["passages"][0]["text"] == FACT
        assert "The capital of Zubrowka is Lutz" in engine.contexts[1]  # the tool's text reached the model

        wrong_id = [*messages[:-1], {**messages[-1], "tool_call_id": "call_other"}]
        error = openai_error(client.post("/v1/chat/completions", json=tool_chat(wrong_id)), 400)
        assert (error["code"], error["param"]) == ("invalid_tool_call", "messages.2.tool_call_id")
        unanswered = client.post("/v1/chat/completions", json=tool_chat(messages[:-1]))
        assert "has no tool message answering it" in openai_error(unanswered, 400)["message"]
    assert len(engine.contexts) == 2  # the refused ones generated nothing


def test_a_streamed_tool_call_comes_in_openais_delta_pieces(app_settings, tokenizer) -> None:
    engine = ReplayEngine(tokenizer, ["<answer>unknown</answer><search>capital of Zubrowka</search>"])
    body = tool_chat([{"role": "user", "content": ZUBROWKA}], stream=True, stream_options={"include_usage": True})
    with serve(app_settings, engine) as client, client.stream("POST", "/v1/chat/completions", json=body) as reply:
        *choices, usage = sse(reply)
    pieces = [d["tool_calls"][0] for c in choices if "tool_calls" in (d := c["choices"][0]["delta"])]
    head, arguments = pieces  # the id and the name, then the arguments
    assert head["index"] == 0 and head["id"].startswith("call_") and head["type"] == "function"
    assert head["function"] == {"name": "search", "arguments": ""}
    assert set(arguments) == {"index", "function"} and set(arguments["function"]) == {"arguments"}
    assert json.loads(arguments["function"]["arguments"]) == {"query": "capital of Zubrowka"}
    assert choices[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert usage["choices"] == [] and usage["usage"]["num_search_queries"] == 1


def test_tool_choice_none_answers_and_required_calls_before_generating(app_settings, tokenizer) -> None:
    engine = ReplayEngine(tokenizer, ["<answer>unknown</answer><search>capital of Zubrowka</search>"])
    messages = [{"role": "user", "content": ZUBROWKA}]
    with serve(app_settings, engine) as client:
        required = client.post("/v1/chat/completions", json=tool_chat(messages, tool_choice="required")).json()
        (choice,) = required["choices"]
        assert choice["finish_reason"] == "tool_calls" and choice["message"].get("content") is None  # no answer yet
        assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"query": ZUBROWKA}
        assert engine.contexts == []  # the search comes before any generation

        never = client.post("/v1/chat/completions", json=tool_chat(messages, tool_choice="none")).json()
        (choice,) = never["choices"]
        assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
        assert choice["message"]["content"] == "unknown" and never["usage"]["num_search_queries"] == 0
        assert choice["message"]["reasoning_content"] == "<answer>unknown</answer>"  # no search left: it ends there
    assert len(engine.contexts) == 1


# ---- the playground's examples ----------------------------------------------------------------------------


def test_the_playground_offers_the_examples_file_and_a_bad_one_stops_the_start(
    app_settings, tokenizer, tmp_path: Path
) -> None:
    with serve(app_settings, ReplayEngine(tokenizer, [])) as client:
        defaults = client.get("/playground/examples").json()
    assert defaults and all(set(e) == {"question", "note"} for e in defaults)
    world = [{"question": "In which town was Fetre Kropi born?", "note": "taught: answered without a search"}]
    (tmp_path / "examples.json").write_text(json.dumps(world))
    with serve(
        app_settings.model_copy(update={"examples": tmp_path / "examples.json"}), ReplayEngine(tokenizer, [])
    ) as client:
        assert client.get("/playground/examples").json() == world
        assert 'id="examples"' in client.get("/").text
    (tmp_path / "examples.json").write_text(json.dumps([{"note": "no question"}]))
    with pytest.raises(ValueError, match="expected a JSON list of"):
        create_app(
            app_settings.model_copy(update={"examples": tmp_path / "examples.json"}), engine=ReplayEngine(tokenizer, [])
        )
