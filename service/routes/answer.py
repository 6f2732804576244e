"""`POST /v1/answer`: one question in, one answer out, with the searches it took."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError

from sem.loop import LoopOptions, Trace
from sem.settings import Limits
from service.deps import StateDep
from service.schemas import AnswerRequest, AnswerResponse, ErrorResponse, PassageOut, SearchOut, TraceOut, Usage

router = APIRouter(tags=["answer"])
T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client went away; its generation was cancelled."""


def check_limits(body: AnswerRequest, limits: Limits) -> None:
    """Reject what the configured caps do not allow, as a 422 naming the field."""
    caps = {
        "question": (len(body.question), limits.max_question_chars, "characters"),
        "max_searches": (body.max_searches, limits.max_searches, ""),
        "top_k": (body.top_k, limits.max_top_k, ""),
        "max_tokens": (body.max_tokens, limits.max_tokens, ""),
    }
    errors = []
    for field, (value, cap, unit) in caps.items():
        if value is not None and value > cap:
            what = f"at most {cap} {unit}".strip()
            errors.append({"loc": ("body", field), "msg": f"must be {what} (got {value})", "type": "less_than_equal"})
    if not body.question.strip():
        errors.append({"loc": ("body", "question"), "msg": "must not be blank", "type": "string_too_short"})
    if errors:
        raise RequestValidationError(errors)


async def run_until_disconnect(work: Awaitable[T], request: Request) -> T:
    """Run the work, cancelling it (and so the engine request) if the client disconnects first."""
    task = asyncio.ensure_future(work)

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    raise ClientDisconnected()


def to_response(trace: Trace, model: str, started: float, *, with_trace: bool) -> AnswerResponse:
    prompt_tokens = len(trace.prompt_ids) + trace.inserted_tokens
    return AnswerResponse(
        id=trace.request_id,
        created=int(time.time()),
        model=model,
        answer=trace.answer,
        search_count=trace.search_count,
        searches=[
            SearchOut(
                query=s.query,
                passages=[PassageOut(**p.model_dump()) for p in s.passages],
                cached=s.cached,
                latency_ms=s.latency_ms,
                error=s.error,
                forced=s.forced,
            )
            for s in trace.searches
        ],
        search_errors=trace.search_errors,
        finish_reason=trace.finish_reason,
        usage=Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=trace.generated_tokens,
            total_tokens=prompt_tokens + trace.generated_tokens,
            num_search_queries=trace.search_count,
        ),
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
        trace=TraceOut(
            text=trace.completion,
            answers=trace.answers,
            follows_template=trace.follows_template,
            refused_searches=trace.refused_searches,
            engine_calls=trace.engine_calls,
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
    check_limits(body, state.settings.limits)
    loop = state.require_loop()
    options = LoopOptions.from_defaults(
        state.settings.loop,
        policy=body.search,
        max_searches=body.max_searches,
        top_k=body.top_k,
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        seed=body.seed,
    )
    started = time.perf_counter()
    request_id = f"ans-{uuid.uuid4().hex}"
    trace = await run_until_disconnect(loop.run(body.question, options, request_id=request_id), request)
    metrics = state.metrics
    metrics.answers.labels(body.search.value, trace.finish_reason).inc()
    metrics.searches.inc(trace.search_count)
    metrics.search_errors.inc(len(trace.search_errors))
    metrics.generated_tokens.inc(trace.generated_tokens)
    metrics.latency.observe(time.perf_counter() - started)
    return to_response(trace, state.model_name, started, with_trace=body.return_trace)
