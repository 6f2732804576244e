"""`POST /v1/responses`: OpenAI's Responses API, read as a chat request and run by the same loop."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from service.deps import StateDep
from service.openai.prepare import prepare_chat
from service.protocol import STREAMED_RESPONSES
from service.responses.convert import to_chat, to_response
from service.responses.protocol import Response, ResponsesRequest
from service.responses.stream import started_response, stream_response

router = APIRouter(tags=["openai"])


@router.post(
    "/v1/responses",
    response_model=Response,
    responses=STREAMED_RESPONSES,
)
async def responses(body: ResponsesRequest, state: StateDep, request: Request) -> Response | StreamingResponse:
    """OpenAI's Responses API: the answer is the `message` item, each search the service ran a `web_search_call`
    item, the search count `usage.num_search_queries`. A function tool named as a search hands each search to the
    client (a `function_call` item; its `function_call_output` comes back in `input`), as chat's tool calls do."""
    request_id = f"resp-{uuid.uuid4().hex}"
    ready = await prepare_chat(to_chat(body), state, request, request_id)
    options, tool = ready.options, ready.chat.tool
    if body.stream:
        started = started_response(body, request_id, ready.model.name, int(time.time()))
        events = ready.stream(state, "responses", state.settings.limits.max_prompt_tokens)
        frames = stream_response(events, body, ready.model.name, started, tool, options.passage_chars,
                                 options.confidence_threshold)  # fmt: skip
        return StreamingResponse(frames, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    trace = await ready.run(state, "responses", request)
    return to_response(body, trace, ready.model.name, tool, options.passage_chars, options.confidence_threshold)
