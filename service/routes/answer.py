"""`POST /v1/answer`: one question in, one answer out, with the searches it took."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request

from sem.loop import LoopOptions, Trace
from service.admission import before
from service.cancel import ClientDisconnected, run_until_disconnect
from service.deps import StateDep
from service.limits import check_limits
from service.schemas import AnswerRequest, AnswerResponse, ErrorResponse, TraceOut
from service.traces import search_out, usage_of

router = APIRouter(tags=["answer"])


def to_response(trace: Trace, model: str, started: float, *, with_trace: bool) -> AnswerResponse:
    return AnswerResponse(
        id=trace.request_id,
        created=int(time.time()),
        model=model,
        answer=trace.answer,
        search_count=trace.search_count,
        searches=[search_out(s) for s in trace.searches],
        search_errors=trace.search_errors,
        confidence=trace.confidence,
        finish_reason=trace.finish_reason,
        usage=usage_of(trace),
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
        trace=TraceOut(
            text=trace.completion,
            answers=trace.answers,
            follows_template=trace.follows_template,
            refused_searches=trace.refused_searches,
            engine_calls=trace.engine_calls,
            prefill_tokens=trace.prefill_tokens,
        )
        if with_trace
        else None,
    )


@router.post(
    "/v1/answer",
    response_model=AnswerResponse,
    response_model_exclude_none=True,
    responses={422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
)
async def answer(body: AnswerRequest, state: StateDep, request: Request) -> AnswerResponse:
    """Answer one question; the model searches when it needs to (or as `search` says)."""
    check_limits(
        state.settings.limits,
        question=body.question,
        max_searches=body.max_searches,
        top_k=body.top_k,
        max_tokens=body.max_tokens,
    )
    loop = state.require_loop()
    state.check_search_mode(body.search_mode, param="search_mode")
    options = LoopOptions.from_defaults(
        state.loop_defaults,
        policy=body.search,
        max_searches=body.max_searches,
        top_k=body.top_k,
        search_mode=body.search_mode,
        max_tokens=body.max_tokens,
        min_tokens=body.min_tokens,
        confidence_threshold=body.confidence_threshold,
        temperature=body.temperature,
        seed=body.seed,
        max_prompt_tokens=state.settings.limits.max_prompt_tokens,
    )
    started = time.perf_counter()
    request_id = f"ans-{uuid.uuid4().hex}"
    try:
        async with state.admission.slot() as deadline:
            work = before(deadline, loop.run(body.question, options, request_id=request_id))
            trace = await run_until_disconnect(work, request)
    except ClientDisconnected:
        state.metrics.cancelled.labels("answer").inc()
        raise
    state.metrics.record(body.search.value, trace, time.perf_counter() - started)
    return to_response(trace, state.model_name, started, with_trace=body.return_trace)
