"""OpenAI-compatible `POST /v1/chat/completions` and `GET /v1/models`."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from sem.loop import Trace, check_prompt_length
from service.admission import before
from service.cancel import ClientDisconnected, run_until_disconnect
from service.chat import loop_options, split_conversation, stream_completion, to_completion
from service.deps import StateDep
from service.errors import InvalidRequest, ModelNotFound
from service.limits import check_limits
from service.schemas import ChatCompletion, ChatCompletionRequest, ErrorResponse, ModelCard, ModelList
from service.state import ServiceState

router = APIRouter(tags=["openai"])


def check_request(body: ChatCompletionRequest, state: ServiceState) -> None:
    if body.model not in state.model_aliases:
        raise ModelNotFound(f"the model {body.model!r} does not exist; this server serves {state.model_name!r}")
    if body.n != 1:
        raise InvalidRequest("n > 1 is not supported: send one request per completion", param="n")
    cap = state.settings.limits.max_messages
    if len(body.messages) > cap:
        raise InvalidRequest(f"{len(body.messages)} messages, more than the {cap} allowed", param="messages")
    if body.messages[-1].role != "user":
        raise InvalidRequest("the last message must be the user's question (role 'user')", param="messages")
    check_limits(
        state.settings.limits,
        question=body.messages[-1].text,
        max_searches=body.sem.max_searches,
        top_k=body.sem.top_k,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        fields={
            "question": ("body", "messages", len(body.messages) - 1, "content"),
            "max_searches": ("body", "sem", "max_searches"),
            "top_k": ("body", "sem", "top_k"),
            "max_tokens": ("body", "max_completion_tokens" if body.max_completion_tokens else "max_tokens"),
        },
    )


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    response_model_exclude_none=True,
    responses={
        200: {"content": {"text/event-stream": {}}},
        400: {"model": ErrorResponse},
        404: {"model": ErrorResponse},
        422: {"model": ErrorResponse},
        503: {"model": ErrorResponse},
    },
)
async def chat_completions(
    body: ChatCompletionRequest, state: StateDep, request: Request
) -> ChatCompletion | StreamingResponse:
    """OpenAI chat completions; the answer is the content, the search count is `usage.num_search_queries`."""
    check_request(body, state)
    loop = state.require_loop()
    state.check_search_mode(body.sem.search_mode, param="sem.search_mode")
    limits = state.settings.limits
    options = loop_options(body, state.loop_defaults, limits.max_prompt_tokens)
    question, history = split_conversation(body)
    policy = body.sem.search.value
    started = time.perf_counter()
    if body.stream:
        # the loop enforces the prompt cap too, but a stream has sent its 200 by then: check it up front
        check_prompt_length(loop.prompt_tokens(question, history), limits.max_prompt_tokens)
        state.admission.check()  # a full queue is a 503 now, before the stream's 200

        def done(trace: Trace) -> None:
            state.metrics.record(policy, trace, time.perf_counter() - started)

        def cancelled() -> None:
            state.metrics.cancelled.labels("chat").inc()

        frames = stream_completion(loop, body, options, state.model_name, on_done=done, on_cancel=cancelled,
                                   admission=state.admission)  # fmt: skip
        return StreamingResponse(frames, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    try:
        async with state.admission.slot() as deadline:
            work = before(deadline, loop.run(question, options, history=history))
            trace = await run_until_disconnect(work, request)
    except ClientDisconnected:
        state.metrics.cancelled.labels("chat").inc()
        raise
    state.metrics.record(policy, trace, time.perf_counter() - started)
    return to_completion(body, trace, state.model_name)


@router.get("/v1/models", response_model=ModelList)
async def models(state: StateDep) -> ModelList:
    """The served model (adapters will be listed here too)."""
    root = state.settings.model_path
    return ModelList(data=[ModelCard(id=state.model_name, created=state.started_at, root=root)])
