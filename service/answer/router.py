"""`POST /v1/answer`: one question in, one answer out, with the searches it took."""

from __future__ import annotations

import time
import uuid
from functools import partial

from fastapi import APIRouter, Request

from service.answer.protocol import AnswerRequest, AnswerResponse
from service.answer.serving import to_response
from service.deps import StateDep
from service.limits import check_limits
from service.prepare import SearchAsked, prepare
from service.protocol import ErrorResponse

router = APIRouter(tags=["answer"])


@router.post(
    "/v1/answer",
    response_model=AnswerResponse,
    response_model_exclude_none=True,
    responses={404: {"model": ErrorResponse}, 422: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
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
    fields = {"policy": body.search, "max_searches": body.max_searches, "top_k": body.top_k,
              "search_mode": body.search_mode, "max_tokens": body.max_tokens, "min_tokens": body.min_tokens,
              "confidence_threshold": body.confidence_threshold, "temperature": body.temperature,
              "seed": body.seed}  # fmt: skip
    asked = SearchAsked(mode=body.search_mode, domains=body.search_domains, rate=body.search_rate)
    ready = await prepare(state, request, body.model, fields, asked)
    model, options = ready.model, ready.options
    started = time.perf_counter()
    work = partial(model.loop.run, body.question, options, request_id=f"ans-{uuid.uuid4().hex}")
    policy = options.policy.value
    trace = await state.runner.run("answer", policy, work, request, dialled=ready.dialled, model=model.name)
    return to_response(trace, model.name, started, with_trace=body.return_trace,
                       passage_chars=options.passage_chars)  # fmt: skip
