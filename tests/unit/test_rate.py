"""The search-rate dial (issue #44): its threshold against a sorted list on known streams (cold start, drift), the
rate it achieves, a budget spread over its window, and the app's validation and counting."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from sem.engines.replay import ReplayEngine
from sem.rate import ABOVE_ALL, SearchRateDial, rate_threshold
from sem.settings import Settings
from service.app import create_app


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def fill(dial: SearchRateDial, values: list[float], clock: Clock | None = None, every_s: float = 1.0) -> None:
    for c in values:
        await dial.observe(c)
        if clock is not None:
            clock.now += every_s


async def test_cold_start_uses_the_calibration_then_the_window_quantile() -> None:
    dial = SearchRateDial("m", calibrated=0.9, size=100, warmup=10)
    await fill(dial, [0.5] * 9)
    assert await dial.threshold(0.3) == 0.9  # 9 < warmup: the calibrated threshold
    await fill(dial, [0.2])
    assert (
        await dial.threshold(0.3) == 0.5 and await dial.threshold(0.0) == 0.2 and await dial.threshold(1.0) == ABOVE_ALL
    )


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.5, 0.9])
async def test_the_threshold_is_the_sorted_windows_quantile_and_follows_drift(rate: float) -> None:
    rng = random.Random(7)
    dial = SearchRateDial("m", calibrated=0.5, size=200, warmup=20)
    stream = [rng.random() for _ in range(300)]
    await fill(dial, stream)
    window = sorted(stream[-200:])
    assert await dial.threshold(rate) == window[round(rate * 200)]
    drifted = [0.5 + 0.5 * rng.random() for _ in range(200)]  # the model grew surer: the window moves with it
    await fill(dial, drifted)
    assert await dial.threshold(rate) == sorted(drifted)[round(rate * 200)]


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.7])
async def test_the_rate_achieved_on_a_stream_is_the_rate_asked(rate: float) -> None:
    rng = random.Random(3)
    dial = SearchRateDial("m", calibrated=0.5, size=500, warmup=30)
    searched = counted = 0
    for i in range(2000):
        c = rng.betavariate(5, 1)  # confident answers mostly, as a taught model's are
        threshold = await dial.threshold(rate)
        if i >= 200:  # the window is warm
            searched += c < threshold
            counted += 1
        await dial.observe(c)
    assert abs(searched / counted - rate) <= 0.03


async def test_a_budget_spreads_the_rate_over_its_window() -> None:
    clock = Clock()
    dial = SearchRateDial("m", calibrated=0.5, size=500, warmup=10, clock=clock)
    await fill(dial, [i / 100 for i in range(100)], clock, every_s=0.5)  # two questions a second
    # 60 searches left, 300 s to go at 2 questions a second: 600 questions, so 0.1 of them, not the 0.5 asked
    used, threshold = await dial.plan(0.5, left=60, reset_s=300)
    assert used == pytest.approx(0.1, abs=0.01)
    assert threshold == rate_threshold([i / 100 for i in range(100)], used)
    assert (await dial.plan(0.05, left=60, reset_s=300))[0] == 0.05  # a rate the budget affords is kept
    assert (await dial.plan(0.5, left=0, reset_s=300))[0] == 0.0  # spent: nothing searched, nothing refused


# ---- the app ---------------------------------------------------------------------------------------------------


@pytest.fixture
def client(settings: Settings, tiny_corpus: Path, tokenizer):
    sure = ["<answer>William Shakespeare</answer>"] * 50
    engine = ReplayEngine(tokenizer, sure, logprob=math.log(0.8))
    with TestClient(create_app(settings.model_copy(update={"corpus": tiny_corpus}), engine=engine)) as c:
        deadline = time.monotonic() + 60
        while c.get("/readyz").status_code != 200:  # the index loads in the background
            assert time.monotonic() < deadline, "the app did not get ready"
            time.sleep(0.01)
        yield c, engine


def test_a_bad_rate_is_a_422_naming_the_field(client) -> None:
    c, _ = client
    for body, says in (({"search_rate": 1.5}, "less than or equal"), ({"search_rate": 0.3, "search": "never"}, "needs"),
                       ({"search_rate": 0.3, "confidence_threshold": 0.5}, "not both")):  # fmt: skip
        reply = c.post("/v1/answer", json={"question": "Who wrote Hamlet?", **body})
        assert reply.status_code == 422, reply.text
        assert "search_rate" in reply.text and says in reply.text
    chat = c.post("/v1/chat/completions", json={"model": "replay", "messages": [{"role": "user", "content": "Hi"}],
                                                "sem": {"search_rate": -0.1}})  # fmt: skip
    assert chat.status_code == 422 and "search_rate" in chat.text


def test_the_app_answers_at_the_rate_and_counts_it(client) -> None:
    c, _ = client
    state = c.app.state.sem  # type: ignore[attr-defined]
    for _ in range(3):
        reply = c.post("/v1/answer", json={"question": "Who wrote Hamlet?", "search_rate": 0.3})
        assert reply.status_code == 200 and reply.json()["confidence"] == pytest.approx(0.8)
    assert [c for _, c in state.rate_dial._local] == pytest.approx([0.8] * 3)  # the window has what was answered
    stats = c.get("/v1/stats").json()
    # cold (3 < warmup): the calibrated 0.5 < 0.8, nothing searched
    assert stats["search_rate_achieved"] == 0.0 and stats["searches"] == 0
    metrics = c.get("/metrics").text
    assert 'sem_search_rate_asked_count{kind="asked"} 3.0' in metrics
