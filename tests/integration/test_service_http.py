"""`/v1/answer` over real HTTP: `sem-serve` in a subprocess on a free port, the real model, a real Redis."""

from __future__ import annotations

import httpx
import pytest


def test_health_and_readiness(client: httpx.Client) -> None:
    assert client.get("/healthz").json()["status"] == "ok"
    ready = client.get("/readyz").json()
    assert ready["engine"] == "vllm" and ready["search_backend"] == "bm25" and ready["cache"] == "redis"


def test_always_answers_with_one_search_and_its_passages(client: httpx.Client) -> None:
    r = client.post("/v1/answer", json={"question": "Who wrote Hamlet?", "search": "always", "return_trace": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["search_count"] == 1 and body["usage"]["num_search_queries"] == 1
    (search,) = body["searches"]
    assert search["query"] == "Who wrote Hamlet?" and search["passages"][0]["title"] == "Hamlet"
    assert {"id", "title", "text", "score"} <= set(search["passages"][0])
    assert body["answer"]
    assert "[1] Hamlet" in body["trace"]["text"]
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    # The same search again is served from Redis.
    again = client.post("/v1/answer", json={"question": "Who wrote Hamlet?", "search": "always"}).json()
    assert again["searches"][0]["cached"] is True


def test_never_answers_without_search(client: httpx.Client) -> None:
    body = client.post("/v1/answer", json={"question": "What is 2 + 2?", "search": "never", "max_tokens": 48}).json()
    assert body["search_count"] == 0 and body["searches"] == [] and body["answer"]
    assert "trace" not in body


def test_concurrent_requests(client: httpx.Client, service: str) -> None:
    import asyncio

    async def ask_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=service, timeout=120) as ac:
            questions = [f"Tell me about the Moon, part {i}" for i in range(6)]
            return await asyncio.gather(
                *(ac.post("/v1/answer", json={"question": q, "search": "always", "max_tokens": 24}) for q in questions)
            )

    responses = asyncio.run(ask_all())
    assert all(r.status_code == 200 for r in responses)
    assert len({r.json()["id"] for r in responses}) == 6


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"question": ""}, "question"),
        ({"question": "   "}, "question"),
        ({"question": "x" * 100_000}, "question"),
        ({"question": "q", "max_searches": -1}, "max_searches"),
        ({"question": "q", "max_searches": 1000}, "max_searches"),
        ({"question": "q", "search": "sometimes"}, "search"),
        ({"question": 42}, "question"),
        ({"question": "q", "max_tokens": "many"}, "max_tokens"),
        ({"question": "q", "top_k": 0}, "top_k"),
        ({"question": "q", "temperature": -1}, "temperature"),
        ({"question": "q", "max_search": 2}, "max_search"),  # a typo is not silently ignored
        ({}, "question"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(client: httpx.Client, payload: dict, field: str) -> None:
    r = client.post("/v1/answer", json=payload)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["param"] == field and field in error["message"]
    assert error["type"] == "invalid_request_error"


def test_a_search_mode_the_backend_lacks_is_a_400(client: httpx.Client) -> None:
    r = client.post("/v1/answer", json={"question": "Who wrote Hamlet?", "search_mode": "dense"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "search_mode" and "bm25 backend has a single way to search" in error["message"]


def test_malformed_json_and_unknown_route(client: httpx.Client) -> None:
    r = client.post("/v1/answer", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()
    assert client.get("/v1/nothing").json()["error"]["type"] == "not_found_error"


def test_metrics_count_answers_and_searches(client: httpx.Client) -> None:
    text = client.get("/metrics").text
    assert "sem_answers_total" in text and "sem_searches_total" in text
    assert "sem_ready 1.0" in text
    assert 'sem_search_backend_latency_seconds_count{backend="bm25"}' in text
    assert "sem_searches_per_request_bucket" in text and "sem_search_cache_hits" in text


def test_confidence_gate_through_the_service(client: httpx.Client) -> None:
    """Threshold 0 never searches, 1 always does, and in between the answer's own confidence decides."""
    questions = ["Who wrote Hamlet?", "What is the capital of France?", "Who painted the Mona Lisa?"]

    def ask(question: str, threshold: float) -> dict:
        body = {"question": question, "search": "confidence", "confidence_threshold": threshold, "max_tokens": 64}
        reply = client.post("/v1/answer", json=body)
        assert reply.status_code == 200, reply.text
        return reply.json()

    lows, highs = [ask(q, 0.0) for q in questions], [ask(q, 1.0) for q in questions]
    assert all(r["search_count"] == 0 and 0.0 < r["confidence"] <= 1.0 for r in lows)
    assert all(r["search_count"] == 1 and r["searches"][0]["query"] == q for r, q in zip(highs, questions, strict=True))
    confidences = sorted(r["confidence"] for r in lows)
    middle = (confidences[0] + confidences[-1]) / 2  # a threshold between the least and the most sure answer
    for question, low in zip(questions, lows, strict=True):
        reply = ask(question, middle)
        assert reply["confidence"] == pytest.approx(low["confidence"], abs=1e-3)  # greedy: the same first answer
        assert reply["search_count"] == int(low["confidence"] < middle)
    bad = client.post("/v1/answer", json={"question": "x", "search": "confidence", "confidence_threshold": 2})
    assert bad.status_code == 422 or bad.status_code == 400


def test_either_searches_when_the_model_or_its_confidence_says_so(client: httpx.Client) -> None:
    """The combined gate on the real service: at threshold 0 it is `auto` (the same searches, answer for answer), at
    threshold 1 every question is searched, by the model's own query or by the question itself."""
    questions = ["Who wrote Hamlet?", "What is the capital of France?", "Who painted the Mona Lisa?"]

    def ask(question: str, search: str, **extra: float) -> dict:
        reply = client.post("/v1/answer", json={"question": question, "search": search, "max_tokens": 64, **extra})
        assert reply.status_code == 200, reply.text
        return reply.json()

    for question in questions:
        auto = ask(question, "auto")
        assert ask(question, "either", confidence_threshold=0.0)["search_count"] == auto["search_count"]
        sure = ask(question, "either", confidence_threshold=1.0)
        assert sure["search_count"] >= 1
        if auto["search_count"] == 0:  # the model let its answer stand: the gate searched the question itself
            assert sure["searches"][0]["query"] == question


def test_a_blocked_source_never_reaches_the_model_and_is_cached_apart(client: httpx.Client) -> None:
    """Source filters on the real service: the embedded corpus's passages are known by their id's prefix (`wiki:42`:
    `wiki`), so blocking `wiki` leaves the model no passage at all, and the same query unfiltered is searched again,
    not served the filtered entry."""
    ask = {"question": "Which river flows through Vienna, filtered?", "search": "always", "max_tokens": 24,
           "return_trace": True}  # fmt: skip
    blocked = client.post("/v1/answer", json={**ask, "search_domains": {"block": ["wiki"]}})
    assert blocked.status_code == 200, blocked.text
    (search,) = blocked.json()["searches"]
    assert search["passages"] == [] and search["dropped"] >= 3 and search["cached"] is False
    assert "<result>\nNo results.\n</result>" in blocked.json()["trace"]["text"]  # all the model read of the search
    (plain,) = client.post("/v1/answer", json=ask).json()["searches"]
    assert plain["cached"] is False and plain["dropped"] == 0 and len(plain["passages"]) == 3
    assert all(p["id"].startswith("wiki:") for p in plain["passages"])
