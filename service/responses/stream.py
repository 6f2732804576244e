"""The Responses API's typed stream events over the loop's events.

`response.created` and `response.in_progress` first; each search the service runs as a `web_search_call` item as it
happens (added, in_progress, searching, completed, done); once the loop is done, SEM's trace as a `reasoning` item,
the answer as a `message` (its text in one delta, then each citation as an annotation), a search handed to the
client as a `function_call` (its arguments in one delta), and `response.completed` (or `response.incomplete`) with
the whole response, as the non-streamed call returns it. An error after the 200 is an `error` event.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel

from sem.loop import Event, Final, SearchResult
from service.errors import describe
from service.openai.tools import SearchTool
from service.responses.convert import response_id, to_response, web_search_call
from service.responses.protocol import FunctionCallOut, OutputMessage, ReasoningOut, Response, ResponsesRequest


class Events:
    """Numbers the events (`sequence_number`) and writes them as SSE frames (`event:` and `data:`)."""

    def __init__(self) -> None:
        self.sequence = 0

    def __call__(self, kind: str, **fields: Any) -> str:
        values = {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in fields.items()}
        data = {"type": kind, "sequence_number": self.sequence, **values}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def stream_response(
    events: AsyncIterator[Event],
    body: ResponsesRequest,
    model: str,
    started: Response,
    tool: SearchTool | None,
    passage_chars: int | None,
    threshold: float | None,
) -> AsyncIterator[str]:
    emit = Events()
    yield emit("response.created", response=started)
    yield emit("response.in_progress", response=started)
    index = 0
    try:
        async for event in events:
            if isinstance(event, SearchResult) and not event.record.client:
                key = started.id.removeprefix("resp_")
                item = web_search_call(key, event.index, event.record)
                added = item.model_copy(update={"status": "in_progress"})
                yield emit("response.output_item.added", output_index=index, item=added)
                for phase in ("in_progress", "searching", "completed"):
                    yield emit(f"response.web_search_call.{phase}", output_index=index, item_id=item.id)
                yield emit("response.output_item.done", output_index=index, item=item)
                index += 1
            elif isinstance(event, Final):
                done = to_response(body, event.trace, model, tool, passage_chars, threshold)
                for item in done.output[index:]:
                    for frame in _item_events(emit, index, item):
                        yield frame
                    index += 1
                yield emit(f"response.{'incomplete' if done.status == 'incomplete' else 'completed'}", response=done)
    except Exception as exc:  # the stream has started: the error travels in-band
        _, error, _ = describe(exc)
        yield emit("error", code=error.error.code, message=error.error.message, param=error.error.param)
    finally:
        await events.aclose()  # type: ignore[attr-defined]  # now, not when collected: aborts, counts the cancel


def _item_events(emit: Events, index: int, item: BaseModel) -> list[str]:
    """One finished item's events, as OpenAI streams an item of its kind."""
    frames = []
    if isinstance(item, OutputMessage):
        part = item.content[0]
        empty = item.model_copy(update={"content": [], "status": "in_progress"})
        frames.append(emit("response.output_item.added", output_index=index, item=empty))
        ids = {"item_id": item.id, "output_index": index, "content_index": 0}
        frames.append(emit("response.content_part.added", **ids, part={"type": "output_text", "text": "",
                                                                        "annotations": []}))  # fmt: skip
        if part.text:
            frames.append(emit("response.output_text.delta", **ids, delta=part.text, logprobs=[]))
        for n, note in enumerate(part.annotations):
            frames.append(emit("response.output_text.annotation.added", **ids, annotation_index=n, annotation=note))
        frames.append(emit("response.output_text.done", **ids, text=part.text, logprobs=[]))
        frames.append(emit("response.content_part.done", **ids, part=part))
    elif isinstance(item, FunctionCallOut):
        frames.append(emit("response.output_item.added", output_index=index,
                           item=item.model_copy(update={"arguments": "", "status": "in_progress"})))  # fmt: skip
        ids = {"item_id": item.id, "output_index": index}
        frames.append(emit("response.function_call_arguments.delta", **ids, delta=item.arguments))
        frames.append(emit("response.function_call_arguments.done", **ids, arguments=item.arguments, name=item.name))
    elif isinstance(item, ReasoningOut):
        frames.append(emit("response.output_item.added", output_index=index, item=item))
    frames.append(emit("response.output_item.done", output_index=index, item=item))
    return frames


def started_response(body: ResponsesRequest, request_id: str, model: str, created_at: int) -> Response:
    """The response as `response.created` shows it: nothing out yet."""
    return Response(id=response_id(request_id), created_at=created_at, status="in_progress", model=model, output=[],
                    instructions=body.instructions, max_output_tokens=body.max_output_tokens,
                    temperature=body.temperature, top_p=body.top_p, tool_choice=body.tool_choice or "auto",
                    tools=[t.model_dump() for t in body.tools or []], metadata=body.metadata or {})  # fmt: skip
