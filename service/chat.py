"""OpenAI chat completions over the search loop: options, the full response, and the SSE stream.

The final answer is the message `content`; everything the model thought, searched and read is
`reasoning_content` (streamed live); the searches are in `search_results`; the count is
`usage.num_search_queries`. In the stream, `content` arrives once the answer is final: under SEM's template
a first answer may still be followed by a search.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable

from sem.errors import SEMError
from sem.loop import Event, Final, Inserted, LoopOptions, SearchLoop, SearchResult, TextDelta, Trace
from sem.settings import LoopDefaults
from service.admission import Admission, DeadlineExceeded, before
from service.schemas import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ErrorInfo,
    ErrorResponse,
)
from service.schemas.chat import AssistantMessage, Choice, ChunkChoice, DeltaMessage
from service.traces import openai_finish_reason, search_out, usage_of

log = logging.getLogger(__name__)


def loop_options(
    body: ChatCompletionRequest, defaults: LoopDefaults, max_prompt_tokens: int | None = None
) -> LoopOptions:
    return LoopOptions.from_defaults(
        defaults,
        max_prompt_tokens=max_prompt_tokens,
        policy=body.sem.search,
        max_searches=body.sem.max_searches,
        top_k=body.sem.top_k,
        search_mode=body.sem.search_mode,
        confidence_threshold=body.sem.confidence_threshold,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        min_tokens=body.min_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
    )


def split_conversation(body: ChatCompletionRequest) -> tuple[str, list[dict[str, str]]]:
    """The question (last user message) and the earlier user/assistant turns as context.

    System and developer messages are left out: SEM's system prompt defines the template the model was trained on.
    """
    history = [{"role": m.role, "content": m.text} for m in body.messages[:-1] if m.role in ("user", "assistant")]
    return body.messages[-1].text, history


def apply_stop(answer: str, stops: list[str] | None) -> str:
    """Cut the answer at the first stop sequence (OpenAI leaves the stop out)."""
    for stop in stops or []:
        at = answer.find(stop)
        if at >= 0:
            answer = answer[:at]
    return answer


def to_completion(body: ChatCompletionRequest, trace: Trace, model: str) -> ChatCompletion:
    return ChatCompletion(
        id=f"chatcmpl-{trace.request_id}",
        created=int(time.time()),
        model=model,
        choices=[
            Choice(
                message=AssistantMessage(
                    content=apply_stop(trace.answer, body.stop),  # type: ignore[arg-type]
                    reasoning_content=trace.completion,
                ),
                finish_reason=openai_finish_reason(trace),  # type: ignore[arg-type]
            )
        ],
        usage=usage_of(trace),
        search_results=[search_out(s) for s in trace.searches],
    )


def _frame(payload: ChatCompletionChunk | ErrorResponse) -> str:
    # exclude_unset: a delta carries only what it sets (OpenAI's shape); fields that must always be there are set.
    return f"data: {payload.model_dump_json(exclude_unset=True)}\n\n"


async def stream_completion(
    loop: SearchLoop,
    body: ChatCompletionRequest,
    options: LoopOptions,
    model: str,
    on_done: Callable[[Trace], None] | None = None,
    on_cancel: Callable[[], None] | None = None,
    admission: Admission | None = None,
) -> AsyncIterator[str]:
    """SSE frames: role first, reasoning as it is generated, search results, the answer, finish, usage, [DONE].

    A client that goes away closes this generator (Starlette cancels it); closing the loop's generator in turn
    aborts the engine request, and `on_cancel` is told.
    """
    request_id = f"chat-{uuid.uuid4().hex}"
    created = int(time.time())
    question, history = split_conversation(body)

    def chunk(delta: DeltaMessage, finish: str | None = None, **extra: object) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=f"chatcmpl-{request_id}",
            object="chat.completion.chunk",
            created=created,
            model=model,
            choices=[ChunkChoice(delta=delta, finish_reason=finish)],  # type: ignore[arg-type]
            **extra,  # type: ignore[arg-type]
        )

    yield _frame(chunk(DeltaMessage(role="assistant", content="")))
    finished = False
    try:
        async for event in _admitted(loop.stream(question, options, history=history, request_id=request_id), admission):
            if isinstance(event, TextDelta | Inserted):
                yield _frame(chunk(DeltaMessage(reasoning_content=event.text)))
            elif isinstance(event, SearchResult):
                yield _frame(
                    chunk(DeltaMessage(reasoning_content=event.inserted), search_results=[search_out(event.record)])
                )
            elif isinstance(event, Final):
                trace = event.trace
                finished = True
                if on_done is not None:
                    on_done(trace)
                answer = apply_stop(trace.answer, body.stop)  # type: ignore[arg-type]
                if answer:
                    yield _frame(chunk(DeltaMessage(content=answer)))
                yield _frame(chunk(DeltaMessage(), openai_finish_reason(trace)))
                if body.stream_options and body.stream_options.include_usage:
                    usage_chunk = ChatCompletionChunk(
                        id=f"chatcmpl-{request_id}",
                        object="chat.completion.chunk",
                        created=created,
                        model=model,
                        choices=[],
                        usage=usage_of(trace),
                    )
                    yield _frame(usage_chunk)
    except DeadlineExceeded as exc:
        finished = True
        log.warning("stream %s: %s", request_id, exc)
        yield _frame(ErrorResponse(error=ErrorInfo(message=str(exc), type="timeout", code="deadline_exceeded")))
    except SEMError as exc:
        finished = True
        log.error("stream %s failed: %s", request_id, exc)
        yield _frame(ErrorResponse(error=ErrorInfo(message=str(exc), type="server_error", code="engine_error")))
    except Exception as exc:  # the stream has started: the error must travel in-band
        finished = True
        log.exception("stream %s failed", request_id)
        message = f"internal error: {type(exc).__name__}"
        yield _frame(ErrorResponse(error=ErrorInfo(message=message, type="server_error")))
    finally:
        if not finished and on_cancel is not None:
            on_cancel()
    yield "data: [DONE]\n\n"


async def _admitted(events: AsyncIterator[Event], admission: Admission | None) -> AsyncIterator[Event]:
    """The loop's events, generated inside an admission slot and before its deadline (each step is bounded)."""
    if admission is None:
        async for event in events:
            yield event
        return
    async with admission.slot() as deadline:
        try:
            while True:
                try:
                    event = await before(deadline, anext(events))
                except StopAsyncIteration:
                    return
                yield event
        finally:
            await events.aclose()  # type: ignore[attr-defined]
