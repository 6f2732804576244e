"""The transformers engine batches requests that wait together (sem/engines/hf.py), with the real default model: a
batch answers each row as that row alone would, a caller that leaves does not stop the others, and requests that
cannot share a call (another temperature) still all get their answers."""

from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

from sem import protocol
from sem.engines.base import Delta, SamplingOptions

QUESTIONS = ("Who wrote Hamlet?", "What is the capital of France?", "Which river flows through Baghdad?",
             "Who painted the Mona Lisa?")  # fmt: skip
STOPS = [protocol.ANSWER_CLOSE, protocol.SEARCH_CLOSE]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def engine(settings):
    from sem.engines.hf import HFEngine

    engine = await HFEngine.start(settings.model_path, settings)
    yield engine
    await engine.aclose()


def prompt(engine, question: str) -> list[int]:
    text = protocol.render_prompt(engine.tokenizer, protocol.build_messages(question, ()))
    return engine.tokenizer.encode(text, add_special_tokens=False)


async def answer(engine, question: str, options: SamplingOptions, request_id: str) -> Delta:
    async for delta in engine.generate(prompt(engine, question), options, request_id=request_id):
        return delta
    raise AssertionError("no delta")


async def test_a_batch_answers_each_row_as_it_would_alone(engine) -> None:
    # different token limits in one batch: the short rows end at theirs, the prompts differ in length (left pads)
    options = [SamplingOptions(max_tokens=n, stop=STOPS, logprobs=True) for n in (40, 24, 40, 6)]
    pairs = list(enumerate(zip(QUESTIONS, options, strict=True)))
    alone = [await answer(engine, q, o, f"alone-{i}") for i, (q, o) in pairs]
    together = await asyncio.gather(*(answer(engine, q, o, f"batch-{i}") for i, (q, o) in pairs))
    for a, b, o in zip(alone, together, options, strict=True):
        assert (b.text, b.token_ids, b.finish_reason, b.stop) == (a.text, a.token_ids, a.finish_reason, a.stop)
        assert len(b.token_ids) <= o.max_tokens and len(b.logprobs or []) == len(b.token_ids)
        assert max(abs(x - y) for x, y in zip(a.logprobs or [], b.logprobs or [], strict=True)) < 1e-3
    assert together[3].finish_reason == "length" and len(together[3].token_ids) == 6


async def test_a_caller_that_leaves_does_not_stop_the_batch(engine) -> None:
    options = SamplingOptions(max_tokens=32, stop=STOPS)
    expected = await answer(engine, QUESTIONS[0], options, "expected")
    leaving = asyncio.create_task(answer(engine, QUESTIONS[1], SamplingOptions(max_tokens=64), "leaving"))
    staying = asyncio.create_task(answer(engine, QUESTIONS[0], options, "staying"))
    await asyncio.sleep(0)  # both are waiting or running together
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    got = await staying
    assert (got.text, got.finish_reason) == (expected.text, expected.finish_reason)
    assert not engine._cancelled and not engine._waiting  # nothing left behind


async def test_requests_that_cannot_share_a_call_all_get_answers(engine) -> None:
    greedy = SamplingOptions(max_tokens=16, stop=STOPS)
    sampled = SamplingOptions(max_tokens=16, stop=STOPS, temperature=1.0, seed=3)
    replies = await asyncio.gather(*(answer(engine, q, greedy if i % 2 else sampled, f"mixed-{i}")
                                     for i, q in enumerate(QUESTIONS)))  # fmt: skip
    assert all(r.finish_reason in ("stop", "length") and r.token_ids for r in replies)
    alone = await answer(engine, QUESTIONS[1], greedy, "greedy-alone")
    assert replies[1].text == alone.text
