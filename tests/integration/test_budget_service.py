"""Search budgets and source filters through the service: two apps (two replicas: each its own budget client, cache
and state) on real HTTP, sharing one real Redis and one engine, with API keys. A spent budget answers closed-book with
the flag, `always` gets a 429 with Retry-After, the headers say what is left; a blocked domain never reaches the
model, and a filtered search is never served to an unfiltered one.

The engine is scripted (`ReplayEngine`): what is tested is what the service does around the model, and the engine's
record of every context it was given is the proof that a blocked passage never reached it. The same filter on the
real model and the real service: test_service_http.py."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from sem.engines.replay import ReplayEngine
from sem.keys import hash_key
from sem.search.bm25 import BM25Backend
from sem.settings import Auth, BudgetSettings, Settings
from service.app import create_app
from tests.conftest import free_port

SPENDER, FILTERER = "sk-test-budget-spender", "sk-test-budget-filterer"
NOW = time.time()  # the apps' budgets run on this frozen clock: no window turns over mid-test
ROWS = [
    {"id": "https://en.wikipedia.org/wiki/Hamlet", "title": "Hamlet",
     "text": "Hamlet is a tragedy written by William Shakespeare around 1600."},
    {"id": "https://spam.example.com/hamlet", "title": "Hamlet facts",
     "text": "Hamlet, the tragedy, was written by Quentin Spamwell in 1931, says this page."},
    {"id": "https://example.com/paris", "title": "Paris", "text": "Paris is the capital and largest city of France."},
    {"id": "wiki:moon", "title": "Moon", "text": "The Moon is the only natural satellite of the Earth."},
]  # fmt: skip


class Answering(ReplayEngine):
    """Answers every request (an empty script would end at once, and the loop would force an answer)."""

    async def generate(self, prompt_ids, options, *, request_id):  # type: ignore[no-untyped-def]
        if not self.replies:
            self.replies.append("<answer>William Shakespeare</answer>")
        async for delta in super().generate(prompt_ids, options, request_id=request_id):
            yield delta


def key(k: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {k}"}


@pytest.fixture(scope="module")
def engine(tokenizer) -> Answering:  # type: ignore[no-untyped-def]
    return Answering(tokenizer, [])


@pytest.fixture(scope="module")
def replicas(
    settings: Settings, redis_server: str, tmp_path_factory: pytest.TempPathFactory, engine: Answering
) -> Iterator[list[str]]:
    """Two apps on one event loop in a thread, each on its own port. The spender key may run 2 searches a day (cache
    hits count), the deployment 1000; the second app also filters sources."""
    corpus = tmp_path_factory.mktemp("budget") / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    BM25Backend(corpus).load_sync()  # the index, built once: two apps building it at once would race
    budget = BudgetSettings(per_key={"day": 2}, deployment={"day": 1000}, count_cache_hits=True,
                            keys={hash_key(FILTERER): {"month": 100}})  # fmt: skip
    base = settings.model_copy(update={
        "corpus": corpus, "redis_url": redis_server, "budget": budget,
        "auth": Auth(api_key_hashes=[hash_key(SPENDER), hash_key(FILTERER)]),
    })  # fmt: skip
    sources = {"allow_domains": ["wikipedia.org", "example.com", "wiki"], "block_domains": ["spam.example.com"]}
    filtered = base.model_copy(update={"search": base.search.model_copy(update=sources)})
    apps = [create_app(base, engine=engine), create_app(filtered, engine=engine)]
    for app in apps:
        app.state.sem.budget.clock = lambda: NOW
    ports = [free_port() for _ in apps]
    servers = [uvicorn.Server(uvicorn.Config(a, host="127.0.0.1", port=p, log_level="warning"))
               for a, p in zip(apps, ports, strict=True)]  # fmt: skip

    async def serve_all() -> None:
        await asyncio.gather(*(s.serve() for s in servers))

    thread = threading.Thread(target=asyncio.run, args=(serve_all(),), daemon=True)
    thread.start()
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    deadline = time.monotonic() + 60
    while not all(_ready(u) for u in urls):
        assert time.monotonic() < deadline and thread.is_alive(), "the apps did not get ready"
        time.sleep(0.1)
    yield urls
    for s in servers:
        s.should_exit = True
    thread.join(timeout=30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def ask(url: str, who: str, **body: object) -> httpx.Response:
    body = {"max_tokens": 24, **body}
    return httpx.post(f"{url}/v1/answer", json=body, headers=key(who), timeout=120)


def test_a_spent_budget_answers_closed_book_and_always_gets_a_429(replicas: list[str]) -> None:
    a, b = replicas
    first = ask(a, SPENDER, question="Who wrote Hamlet?", search="always")
    assert first.status_code == 200 and first.json()["search_count"] == 1, first.text
    assert first.headers["x-sem-search-budget-remaining"] == "1"
    second = ask(b, SPENDER, question="What is the capital of France?", search="always")  # the other replica
    assert second.status_code == 200 and second.json()["search_count"] == 1, second.text
    assert second.headers["x-sem-search-budget-remaining"] == "0"
    assert not first.json()["search_budget_exhausted"] and not second.json()["search_budget_exhausted"]

    # spent: a request that would search answers without, and says so
    closed = ask(a, SPENDER, question="What orbits the Earth?", search="confidence", confidence_threshold=1.0)
    assert closed.status_code == 200, closed.text
    body = closed.json()
    assert body["search_budget_exhausted"] is True and body["search_count"] == 0 and body["answer"].strip()
    assert closed.headers["x-sem-search-budget-remaining"] == "0"
    assert 0 < int(closed.headers["x-sem-search-budget-reset"]) <= 86_400

    # `always` asked for a search: 429, Retry-After, a message that says what happened
    refused = ask(b, SPENDER, question="Who wrote Hamlet?", search="always")
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "search_budget_exhausted" and "this key's 2 per day" in error["message"]
    assert abs(int(refused.headers["retry-after"]) - int(closed.headers["x-sem-search-budget-reset"])) <= 2

    # chat: the flag in the `sem` extension, whole and streamed; `always` is a 429 there too
    chat = {"model": "x", "messages": [{"role": "user", "content": "What orbits the Earth?"}], "max_tokens": 16,
            "sem": {"search": "confidence", "confidence_threshold": 1.0}}  # fmt: skip
    model = httpx.get(f"{a}/v1/models", headers=key(SPENDER)).json()["data"][0]["id"]
    chat["model"] = model
    whole = httpx.post(f"{a}/v1/chat/completions", json=chat, headers=key(SPENDER), timeout=120)
    assert whole.status_code == 200 and whole.json()["sem"] == {"search_budget_exhausted": True}, whole.text
    with httpx.stream("POST", f"{b}/v1/chat/completions", json={**chat, "stream": True}, headers=key(SPENDER),
                      timeout=120) as stream:  # fmt: skip
        assert stream.headers["x-sem-search-budget-remaining"] == "0"
        frames = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith("data: {")]
    assert frames[-1]["choices"][0]["finish_reason"] and frames[-1]["sem"] == {"search_budget_exhausted": True}
    always = httpx.post(f"{b}/v1/chat/completions", json={**chat, "sem": {"search": "always"}}, headers=key(SPENDER))
    assert always.status_code == 429 and "retry-after" in always.headers

    # what the client and the operator see
    seen = httpx.get(f"{a}/v1/budget", headers=key(SPENDER)).json()
    assert seen["store"] == "redis" and seen["left"] == 0 and seen["count_cache_hits"] is True
    assert {(x["scope"], x["window"], x["spent"], x["left"]) for x in seen["limits"]} >= {("key", "day", 2, 0)}
    metrics = httpx.get(f"{a}/metrics").text
    assert 'sem_search_budget_exhausted_total{outcome="closed_book"}' in metrics
    assert 'sem_search_budget_spends_total{outcome="spent"} 1.0' in metrics  # this replica spent one of the two
    assert 'sem_search_budget_left{window="day"}' in metrics


def test_a_blocked_domain_never_reaches_the_model_and_the_cache_keeps_filters_apart(
    replicas: list[str], engine: Answering
) -> None:
    a, b = replicas
    question = "Who wrote the tragedy Hamlet?"
    seen = len(engine.contexts)
    blocked = ask(a, FILTERER, question=question, search="always", top_k=2, return_trace=True,
                  search_domains={"block": ["Spam.Example.com"]})  # fmt: skip
    assert blocked.status_code == 200, blocked.text
    (search,) = blocked.json()["searches"]
    assert search["dropped"] >= 1 and search["cached"] is False
    assert all("spam.example.com" not in p["id"] for p in search["passages"])
    assert "Spamwell" not in blocked.json()["trace"]["text"]
    assert engine.contexts[seen:] and not any("Spamwell" in c for c in engine.contexts[seen:])  # what it was given

    plain = ask(a, FILTERER, question=question, search="always", top_k=2).json()
    (unfiltered,) = plain["searches"]
    assert unfiltered["cached"] is False and unfiltered["dropped"] == 0  # not the filtered search's entry
    assert any(p["id"] == "https://spam.example.com/hamlet" for p in unfiltered["passages"])

    # the second replica blocks it for everyone; a request narrows its allow list, never widens it
    guarded = ask(b, FILTERER, question=question, search="always", top_k=2, return_trace=True).json()
    assert guarded["searches"][0]["dropped"] >= 1 and "Spamwell" not in engine.contexts[-1]
    wider = ask(b, FILTERER, question=question, search_domains={"allow": ["other.net"]})
    assert wider.status_code == 400 and wider.json()["error"]["param"] == "search_domains.allow", wider.text


@pytest.mark.parametrize(
    ("path", "payload", "param"),
    [
        ("/v1/answer", {"question": "q", "search_domains": {"allow": ["https://x.org/"]}}, "search_domains.allow.0"),
        ("/v1/answer", {"question": "q", "search_domains": {"block": ["ok.org", "bad domain"]}},
         "search_domains.block.1"),
        ("/v1/answer", {"question": "q", "search_domains": {"allowed": ["x.org"]}}, "search_domains.allowed"),
        ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": "q"}],
                                  "sem": {"search_domains": {"block": ["x..org"]}}}, "sem.search_domains.block.0"),
    ],
)  # fmt: skip
def test_a_malformed_domain_is_a_422_naming_the_field(
    replicas: list[str], path: str, payload: dict, param: str
) -> None:
    reply = httpx.post(f"{replicas[0]}{path}", json=payload, headers=key(FILTERER))
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["param"] == param


def test_the_playground_shows_the_budget_left_and_applies_the_filters(replicas: list[str]) -> None:
    """In headless Chromium (test_playground.py's set-up): the key's searches left after an answer, the blocked
    passages counted in the trace and absent from it, and a malformed domain's message."""
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.integration.test_playground import ask_with_keyboard, start_chromium, wait_done

    browser = start_chromium()
    browser.set_window_size(1280, 1100)
    try:
        browser.get(replicas[0] + "/")
        browser.find_element("id", "api-key").send_keys(FILTERER)
        browser.execute_script("document.getElementById('api-key').dispatchEvent(new Event('change'))")
        WebDriverWait(browser, 30).until(lambda d: d.find_element("id", "model").text.startswith("Model: "))
        WebDriverWait(browser, 30).until(lambda d: "resets in" in d.find_element("id", "stat-budget").text)
        browser.find_element("id", "block-domains").send_keys("spam.example.com")
        ask_with_keyboard(browser, "Who wrote the tragedy Hamlet? (playground)", "always")
        (card,) = wait_done(browser)
        assert "done" in card.get_attribute("class"), card.text
        assert "filtered out" in card.find_element("css selector", ".trace li.search .query").text
        assert "Spamwell" not in browser.page_source
        left = browser.find_element("id", "stat-budget").text
        assert left.split()[0].isdigit() and "resets in" in left, left

        browser.find_element("id", "block-domains").send_keys(", not a domain")
        ask_with_keyboard(browser, "Who wrote Hamlet?", "always")
        WebDriverWait(browser, 30).until(lambda d: d.find_element("id", "error").is_displayed())
        assert "is not a domain" in browser.find_element("id", "error").text
    finally:
        browser.quit()
