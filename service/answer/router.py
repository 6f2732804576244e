"""`POST /v1/answer`: one question in, one answer out, with the searches it took."""

from __future__ import annotations

import time
import uuid
from functools import partial

from fastapi import APIRouter, Request

from sem.loop import LoopOptions
from service.answer.protocol import AnswerRequest, AnswerResponse
from service.answer.serving import to_response
from service.budget import prepare_search
from service.deps import StateDep
from service.limits import check_limits
from service.protocol import ErrorResponse
from service.rate import apply_search_rate

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
    model = state.served(body.model)
    state.check_search_mode(body.search_mode, param="search_mode", search=model.search)
    options = LoopOptions.from_defaults(
        model.defaults,
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
    await prepare_search(state, request, options, body.search_domains, param="search_domains")
    dialled = await apply_search_rate(state, model, options, body.search_rate)
    started = time.perf_counter()
    work = partial(model.loop.run, body.question, options, request_id=f"ans-{uuid.uuid4().hex}")
    trace = await state.runner.run("answer", options.policy.value, work, request, dialled=dialled, model=model.name)
    return to_response(trace, model.name, started, with_trace=body.return_trace,
                       passage_chars=options.passage_chars)  # fmt: skip
