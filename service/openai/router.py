"""OpenAI-compatible `POST /v1/chat/completions` and `GET /v1/models`."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from service.deps import StateDep
from service.openai.prepare import prepare_chat
from service.openai.protocol import ChatCompletion, ChatCompletionRequest, ModelCard, ModelList
from service.openai.serving import stream_completion, to_completion
from service.protocol import STREAMED_RESPONSES

router = APIRouter(tags=["openai"])


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    response_model_exclude_none=True,
    responses=STREAMED_RESPONSES,
)
async def chat_completions(
    body: ChatCompletionRequest, state: StateDep, request: Request
) -> ChatCompletion | StreamingResponse:
    """OpenAI chat completions; the answer is the content, the search count is `usage.num_search_queries`.

    With a search function in `tools` the client searches: the completion ends at the model's search with a tool
    call (`finish_reason: "tool_calls"`), and the conversation comes back with the tool's result."""
    request_id = f"chat-{uuid.uuid4().hex}"
    ready = await prepare_chat(body, state, request, request_id)
    chat, options = ready.chat, ready.options
    if body.stream:
        frames = stream_completion(ready.stream(state, "chat", state.settings.limits.max_prompt_tokens), body,
                                   ready.model.name, request_id, chat.tool, options.passage_chars,
                                   options.confidence_threshold)  # fmt: skip
        return StreamingResponse(frames, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    trace = await ready.run(state, "chat", request)
    return to_completion(body, trace, ready.model.name, chat.tool, options.passage_chars, options.confidence_threshold)


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
