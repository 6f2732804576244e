"""OpenAI-compatible `POST /v1/chat/completions` and `GET /v1/models`."""

from __future__ import annotations

import uuid
from functools import partial

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from sem.loop import check_prompt_length
from service.budget import prepare_search
from service.deps import StateDep
from service.openai.protocol import ChatCompletion, ChatCompletionRequest, ModelCard, ModelList
from service.openai.serving import check_request, loop_options, stream_completion, to_completion
from service.protocol import ErrorResponse
from service.rate import apply_search_rate

router = APIRouter(tags=["openai"])


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
    """OpenAI chat completions; the answer is the content, the search count is `usage.num_search_queries`.

    With a search function in `tools` the client searches: the completion ends at the model's search with a tool
    call (`finish_reason: "tool_calls"`), and the conversation comes back with the tool's result."""
    chat = check_request(body, state)
    model = state.served(body.model)
    loop = model.loop
    state.check_search_mode(body.sem.search_mode, param="sem.search_mode", search=model.search)
    limits = state.settings.limits
    options = loop_options(body, model.defaults, limits.max_prompt_tokens, chat)
    await prepare_search(state, request, options, body.sem.search_domains, param="sem.search_domains")
    dialled = await apply_search_rate(state, model, options, body.sem.search_rate)
    policy = options.policy.value
    request_id = f"chat-{uuid.uuid4().hex}"
    rounds = await state.turns.recall(chat.rounds)  # the turns the client did not send back, as kept
    given = {"history": chat.history, "request_id": request_id, "client_searches": rounds}
    if body.stream:
        # the loop enforces the prompt cap too, but a stream has sent its 200 by then: check it up front
        check_prompt_length(loop.prompt_tokens(chat.question, chat.history), limits.max_prompt_tokens)
        events = state.runner.stream("chat", policy, loop.stream(chat.question, options, **given), dialled=dialled,
                                     model=model.name)  # fmt: skip
        frames = stream_completion(events, body, model.name, request_id, chat.tool, options.passage_chars,
                                   options.confidence_threshold)  # fmt: skip
        return StreamingResponse(frames, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    work = partial(loop.run, chat.question, options, **given)
    trace = await state.runner.run("chat", policy, work, request, dialled=dialled, model=model.name)
    return to_completion(body, trace, model.name, chat.tool, options.passage_chars, options.confidence_threshold)


@router.get("/v1/models", response_model=ModelList)
async def models(state: StateDep) -> ModelList:
    """The served models: the engine's own, then each adapter over it (`parent`), each with its gate defaults; the
    one a request naming none gets is first. While they load: the engine's model, from the settings."""
    if state.models is None:
        defaults = state.loop_defaults
        return ModelList(data=[ModelCard(id=state.model_name, created=state.started_at, root=state.settings.model_path,
                                         default_search=defaults.policy,
                                         confidence_threshold=defaults.confidence_threshold)])  # fmt: skip
    default = state.models.default
    cards = []
    for model in sorted(state.models, key=lambda m: m is not default):
        defaults = model.defaults
        cards.append(ModelCard(id=model.name, created=state.started_at, root=model.root,
                               parent=state.model_name if model.adapter else None, default_search=defaults.policy,
                               confidence_threshold=defaults.confidence_threshold))  # fmt: skip
    return ModelList(data=cards)
