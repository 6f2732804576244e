"""Real clients against the real server: openai (sync, async, streaming), LangChain, raw SSE conformance."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

ALWAYS = {"sem": {"search": "always"}}


def test_models_lists_the_served_model(oai: openai.OpenAI, model: str) -> None:
    (card,) = oai.models.list().data
    assert card.id == model
    # the tuned default has no gate file beside its weights: a request that names no policy gets auto
    assert card.model_extra["default_search"] == "auto" and card.model_extra["confidence_threshold"] == 0.5


def test_openai_sync_keeps_the_search_count(oai: openai.OpenAI, model: str) -> None:
    r = oai.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Who wrote Hamlet?"}], max_tokens=48, extra_body=ALWAYS
    )
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage is not None and r.usage.num_search_queries == 1  # type: ignore[attr-defined]
    extra = r.model_extra or {}
    assert extra["search_results"][0]["passages"][0]["title"] == "Hamlet"
    assert "[1] Hamlet" in r.choices[0].message.reasoning_content  # type: ignore[attr-defined]


def test_openai_never_searches_zero(oai: openai.OpenAI, model: str) -> None:
    r = oai.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "What is 2 + 2?"},
        ],
        max_completion_tokens=32,
        extra_body={"sem": {"search": "never"}},
    )
    assert r.usage.num_search_queries == 0  # type: ignore[union-attr]


async def test_openai_async(service: str, model: str) -> None:
    async with openai.AsyncOpenAI(base_url=f"{service}/v1", api_key="x", max_retries=0) as aoai:
        r = await aoai.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Where is Kyoto?"}], max_tokens=32, extra_body=ALWAYS
        )
    assert r.usage.num_search_queries == 1  # type: ignore[union-attr]


def test_openai_streaming_with_usage(oai: openai.OpenAI, model: str) -> None:
    stream = oai.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Who wrote Hamlet?"}],
        max_tokens=48,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=ALWAYS,
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.num_search_queries == 1  # type: ignore[union-attr]


def test_sse_stream_conformance(client: httpx.Client, model: str) -> None:
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": "Who painted the Mona Lisa?"}],
        "max_tokens": 40,
        "stream": True,
        "stream_options": {"include_usage": True},
        **ALWAYS,
    }
    with client.stream("POST", "/v1/chat/completions", json=payload) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = list(r.iter_lines())
    frames = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert all(line == "" or line.startswith("data: ") for line in lines)  # nothing but data frames
    assert frames[-1] == "[DONE]" and frames.count("[DONE]") == 1
    chunks = [json.loads(f) for f in frames[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == chunks[0]["id"] for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    kinds = []
    for c in chunks:
        if not c["choices"]:
            kinds.append("usage")
        elif c["choices"][0]["finish_reason"]:
            kinds.append("finish")
        elif "content" in c["choices"][0]["delta"] and c["choices"][0]["delta"]["content"]:
            kinds.append("content")
        elif c.get("search_results"):
            kinds.append("search")
    assert kinds.index("search") < kinds.index("content") < kinds.index("finish") < kinds.index("usage")
    assert kinds[-1] == "usage" and chunks[-1]["usage"]["num_search_queries"] == 1


def test_langchain_invoke_and_stream(service: str, model: str) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=f"{service}/v1", api_key="x", model=model, max_tokens=32, max_retries=0,
                     extra_body={"sem": {"search": "always"}})  # fmt: skip
    message = llm.invoke("Who wrote Hamlet?")
    assert message.content
    token_usage = message.response_metadata["token_usage"]
    assert token_usage["num_search_queries"] == 1
    pieces = list(llm.stream("Who wrote Hamlet?"))
    assert "".join(str(p.content) for p in pieces)


@pytest.mark.parametrize(
    ("payload", "status", "param"),
    [
        ({"messages": []}, 422, "messages"),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, 400, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 422, "messages.0.role"),
        ({"messages": "Who wrote Hamlet?"}, 422, "messages"),
        ({"messages": [{"role": "user", "content": "hi"}], "n": 2}, 400, "n"),
        ({"messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 422, "temperature"),
        ({"messages": [{"role": "user", "content": "hi"}], "sem": {"search": "maybe"}}, 422, "sem.search"),
        ({"messages": [{"role": "user", "content": "hi"}], "sem": {"max_searches": 99}}, 422, "sem.max_searches"),
        ({"messages": [{"role": "user", "content": "x" * 100_000}]}, 422, "messages.0.content"),
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
    ],
)
def test_bad_chat_requests(client: httpx.Client, model: str, payload: dict, status: int, param: str) -> None:
    r = client.post("/v1/chat/completions", json={"model": model, **payload})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["message"]


def test_openai_client_sees_typed_errors(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        oai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["code"] == "model_not_found"  # type: ignore[index]


def cancelled_count(client: httpx.Client, api: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f'sem_answers_cancelled_total{{api="{api}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_for_count(client: httpx.Client, api: str, above: float) -> float:
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        count = cancelled_count(client, api)
        if count > above:
            return count
        time.sleep(0.2)
    return cancelled_count(client, api)


LONG = "Write a very long story about a dragon who learns to paint, with many chapters."
# The model may not stop before 1500 tokens (tens of seconds here): the client leaves long before the answer ends,
# however short the model's own answer would be.
FORCED_LONG = {"max_tokens": 1500, "min_tokens": 1500}


def test_a_client_leaving_a_stream_cancels_its_generation(client: httpx.Client, service: str, model: str) -> None:
    before = cancelled_count(client, "chat")
    payload = {"model": model, "messages": [{"role": "user", "content": LONG}], "stream": True,
               "sem": {"search": "never"}, **FORCED_LONG}  # fmt: skip
    with (
        httpx.Client(base_url=service, timeout=60) as own,
        own.stream("POST", "/v1/chat/completions", json=payload) as r,
    ):
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")  # the role chunk: generation is under way
        next(lines)
    # leaving the with-blocks closed the connection mid-stream
    assert wait_for_count(client, "chat", before) == before + 1


def test_a_client_timing_out_cancels_its_answer(client: httpx.Client, service: str) -> None:
    before = cancelled_count(client, "answer")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{service}/v1/answer", json={"question": LONG, "search": "never", **FORCED_LONG}, timeout=1.0)
    assert wait_for_count(client, "answer", before) == before + 1
