"""OpenAI chat completions over the search loop: options, the full response, and the SSE stream.

The final answer is the message `content`; everything the model thought, searched and read is
`reasoning_content` (streamed live); the searches are in `search_results`; the count is
`usage.num_search_queries`. In the stream, `content` arrives once the answer is final: under SEM's template
a first answer may still be followed by a search. With a search tool in `tools` the client runs the searches
(`service.openai.tools`): the completion ends at the model's search with a tool call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sem.loop import ClientSearch, Event, Final, Inserted, SearchPolicy, SearchResult, TextDelta, Trace
from service.errors import describe
from service.exceptions import InvalidRequest
from service.limits import check_limits
from service.openai.protocol import (
    Annotation,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChunkChoice,
    DeltaFunctionCall,
    DeltaMessage,
    DeltaToolCall,
    SemReply,
    URLCitation,
)
from service.openai.tools import SearchTool, client_rounds, question_index, search_tool, tool_call_of, tool_policy
from service.protocol import ErrorResponse
from service.traces import citations_of, openai_finish_reason, search_out, usage_of

if TYPE_CHECKING:
    from service.state import ServiceState

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Conversation:
    """What a chat request asks: the question, the turns before it, and the search rounds the client already ran."""

    question: str
    at: int  # the question's index in the messages
    history: list[dict[str, str]]
    tool: SearchTool | None = None  # the client's search: the loop hands searches over as tool calls
    rounds: list[ClientSearch] = field(default_factory=list)
    policy: SearchPolicy | None = None  # from tool_choice when there is a search tool; else sem.search decides


def read_conversation(body: ChatCompletionRequest) -> Conversation:
    """The question (last user message), the user/assistant turns before it as context, and, with a search tool,
    the rounds after it. System and developer messages are left out: SEM's system prompt defines the template
    the model was trained on."""
    tool = search_tool(body)
    if tool is None and body.messages[-1].role != "user":
        raise InvalidRequest(
            "the last message must be the user's question (role 'user'), or a tool message answering a search "
            "(with the search tool in tools)",
            param="messages",
        )
    at = question_index(body.messages)
    history = [{"role": m.role, "content": m.text} for m in body.messages[:at] if m.role in ("user", "assistant")]
    rounds = client_rounds(body.messages, at, tool)
    policy = tool_policy(body, tool) if tool else None
    return Conversation(body.messages[at].text, at, history, tool, rounds, policy)


def check_request(body: ChatCompletionRequest, state: ServiceState) -> Conversation:
    """What the wire models cannot check alone: n, the conversation's shape, the limits (the model name:
    `state.served`)."""
    if body.n != 1:
        raise InvalidRequest("n > 1 is not supported: send one request per completion", param="n")
    cap = state.settings.limits.max_messages
    if len(body.messages) > cap:
        raise InvalidRequest(f"{len(body.messages)} messages, more than the {cap} allowed", param="messages")
    conversation = read_conversation(body)
    check_limits(
        state.settings.limits,
        question=conversation.question,
        max_searches=body.sem.max_searches,
        top_k=body.sem.top_k,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        fields={
            "question": ("body", "messages", conversation.at, "content"),
            "max_searches": ("body", "sem", "max_searches"),
            "top_k": ("body", "sem", "top_k"),
            "max_tokens": ("body", "max_completion_tokens" if body.max_completion_tokens else "max_tokens"),
        },
    )
    return conversation


def loop_fields(body: ChatCompletionRequest, conversation: Conversation) -> dict[str, Any]:
    """The loop's options a chat request sets (None: the served model's default; `service.prepare`)."""
    return {
        "policy": conversation.policy or body.sem.search, "client_search": conversation.tool is not None,
        "max_searches": body.sem.max_searches, "top_k": body.sem.top_k, "search_mode": body.sem.search_mode,
        "confidence_threshold": body.sem.confidence_threshold, "min_tokens": body.min_tokens,
        "max_tokens": body.max_completion_tokens or body.max_tokens, "temperature": body.temperature,
        "top_p": body.top_p, "seed": body.seed,
    }  # fmt: skip


def apply_stop(answer: str, stops: list[str] | None) -> str:
    """Cut the answer at the first stop sequence (OpenAI leaves the stop out)."""
    for stop in stops or []:
        at = answer.find(stop)
        if at >= 0:
            answer = answer[:at]
    return answer


def annotations_of(trace: Trace, content: str, passage_chars: int | None = None) -> list[Annotation] | None:
    """The passages the content rests on as url_citations (a passage with no URL is named by its id); None when
    there are none, so the field is left out as OpenAI leaves it out."""
    found = citations_of(trace, content, passage_chars)
    # type set, not defaulted: stream frames leave unset fields out, and openai-python needs it
    notes = []
    for c in found:
        title = c.title or f"{trace.searches[c.search].query} [{c.rank}]"  # an untitled passage: its search's
        cited = URLCitation(start_index=c.start, end_index=c.end, url=c.url or c.passage_id, title=title)
        notes.append(Annotation(type="url_citation", url_citation=cited))
    return notes or None


def to_completion(
    body: ChatCompletionRequest,
    trace: Trace,
    model: str,
    tool: SearchTool | None = None,
    passage_chars: int | None = None,
    threshold: float | None = None,
) -> ChatCompletion:
    call = tool_call_of(trace, tool) if tool else None
    content = apply_stop(trace.answer, body.stop)  # type: ignore[arg-type]
    return ChatCompletion(
        id=f"chatcmpl-{trace.request_id}",
        created=int(time.time()),
        model=model,
        choices=[
            Choice(
                message=AssistantMessage(
                    content=content or (None if call else ""),  # a call with no answer before it: null, as OpenAI
                    tool_calls=[call] if call else None,
                    reasoning_content=trace.completion,
                    annotations=annotations_of(trace, content, passage_chars),
                ),
                finish_reason=openai_finish_reason(trace),  # type: ignore[arg-type]
            )
        ],
        usage=usage_of(trace),
        search_results=[search_out(s) for s in trace.searches],
        seed_honoured=trace.seed_honoured,
        sem=sem_reply(trace, threshold),
    )


def sem_reply(trace: Trace, threshold: float | None = None) -> SemReply | None:
    """SEM's news, when there is any: a spent budget; the decision a `confidence` answer took (the playground shows
    it: the first answer, its confidence against the threshold)."""
    decided = trace.confidence is not None
    if not (trace.search_budget_exhausted or decided):
        return None
    news = {"search_budget_exhausted": trace.search_budget_exhausted or None, "confidence": trace.confidence,
            "first_answer": trace.answers[0] if decided and trace.answers else None,
            "confidence_threshold": threshold if decided else None}  # fmt: skip
    return SemReply(**{k: v for k, v in news.items() if v is not None})  # only what is news: a delta's shape


def _frame(payload: ChatCompletionChunk | ErrorResponse) -> str:
    # exclude_unset: a delta carries only what it sets (OpenAI's shape); fields that must always be there are set.
    return f"data: {payload.model_dump_json(exclude_unset=True)}\n\n"


async def stream_completion(
    events: AsyncIterator[Event],
    body: ChatCompletionRequest,
    model: str,
    request_id: str,
    tool: SearchTool | None = None,
    passage_chars: int | None = None,
    threshold: float | None = None,
) -> AsyncIterator[str]:
    """SSE frames: role first, reasoning as it is generated, search results, the answer, a tool call (OpenAI's
    delta chunks: id and name, then the arguments), finish (with the citations as annotations), usage, [DONE].

    A client that goes away closes this generator (Starlette cancels it), which closes `events` (see
    `service.runner`). An error after the 200 travels in-band, as the same error object as over HTTP.
    """
    created = int(time.time())

    def chunk(delta: DeltaMessage, finish: str | None = None, **extra: object) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=f"chatcmpl-{request_id}",
            object="chat.completion.chunk",
            created=created,
            model=model,
            choices=[ChunkChoice(index=0, delta=delta, finish_reason=finish)],  # type: ignore[arg-type]
            **extra,  # type: ignore[arg-type]
        )

    yield _frame(chunk(DeltaMessage(role="assistant", content="")))
    try:
        async for event in events:
            if isinstance(event, TextDelta | Inserted):
                yield _frame(chunk(DeltaMessage(reasoning_content=event.text)))
            elif isinstance(event, SearchResult):
                yield _frame(
                    chunk(DeltaMessage(reasoning_content=event.inserted), search_results=[search_out(event.record)])
                )
            elif isinstance(event, Final):
                trace = event.trace
                answer = apply_stop(trace.answer, body.stop)  # type: ignore[arg-type]
                if answer:
                    yield _frame(chunk(DeltaMessage(content=answer)))
                if tool and (call := tool_call_of(trace, tool)):
                    head = DeltaFunctionCall(name=call.function.name, arguments="")
                    yield _frame(chunk(DeltaMessage(tool_calls=[DeltaToolCall(index=0, id=call.id, type="function",
                                                                              function=head)])))  # fmt: skip
                    arguments = DeltaFunctionCall(arguments=call.function.arguments)
                    yield _frame(chunk(DeltaMessage(tool_calls=[DeltaToolCall(index=0, function=arguments)])))
                annotations = annotations_of(trace, answer, passage_chars)
                last = DeltaMessage(annotations=annotations) if annotations else DeltaMessage()
                news = {"sem": reply} if (reply := sem_reply(trace, threshold)) else {}
                yield _frame(chunk(last, openai_finish_reason(trace), **news))
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
    except Exception as exc:  # the stream has started: the error travels in-band
        _, error, _ = describe(exc)
        yield _frame(error)
    finally:
        await events.aclose()  # type: ignore[attr-defined]  # now, not when collected: aborts, counts the cancel
    yield "data: [DONE]\n\n"
