"""Turning a `sem.loop.Trace` into the wire pieces both APIs share."""

from __future__ import annotations

from sem.citations import Citation, cite
from sem.loop import SearchRecord, Trace
from service.protocol import CitationOut, PassageOut, SearchOut, Usage


def search_out(record: SearchRecord) -> SearchOut:
    return SearchOut(
        query=record.query,
        passages=[PassageOut(**p.model_dump()) for p in record.passages],
        cached=record.cached,
        latency_ms=record.latency_ms,
        error=record.error,
        forced=record.forced,
        client=record.client,
        dropped=record.dropped,
    )


def usage_of(trace: Trace) -> Usage:
    """prompt_tokens: the prompt plus every inserted result the model read; completion_tokens: what it wrote;
    num_search_queries: every search of the conversation, a search handed to the client (a tool call) included."""
    prompt_tokens = len(trace.prompt_ids) + trace.inserted_tokens
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=trace.generated_tokens,
        total_tokens=prompt_tokens + trace.generated_tokens,
        num_search_queries=trace.search_count + (trace.pending_search is not None),
    )


def openai_finish_reason(trace: Trace) -> str:
    return trace.finish_reason if trace.finish_reason in ("length", "tool_calls") else "stop"


def citations_of(trace: Trace, answer: str, passage_chars: int | None = None) -> list[Citation]:
    """The passages `answer` rests on, judged on the text the model read (cut at `passage_chars`). None while the
    answer is not final (the loop handed a search to the client)."""
    if trace.pending_search is not None or not trace.searches:
        return []
    return cite(answer, [s.passages for s in trace.searches], max_chars=passage_chars)


def citation_out(c: Citation) -> CitationOut:
    return CitationOut.model_validate(c, from_attributes=True)  # the same fields, by name
