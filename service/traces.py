"""Turning a `sem.loop.Trace` into the wire pieces both APIs share."""

from __future__ import annotations

from sem.loop import SearchRecord, Trace
from service.protocol import PassageOut, SearchOut, Usage


def search_out(record: SearchRecord) -> SearchOut:
    return SearchOut(
        query=record.query,
        passages=[PassageOut(**p.model_dump()) for p in record.passages],
        cached=record.cached,
        latency_ms=record.latency_ms,
        error=record.error,
        forced=record.forced,
    )


def usage_of(trace: Trace) -> Usage:
    """prompt_tokens: the prompt plus every inserted result the model read; completion_tokens: what it wrote."""
    prompt_tokens = len(trace.prompt_ids) + trace.inserted_tokens
    return Usage(
        prompt_tokens=prompt_tokens,
        completion_tokens=trace.generated_tokens,
        total_tokens=prompt_tokens + trace.generated_tokens,
        num_search_queries=trace.search_count,
    )


def openai_finish_reason(trace: Trace) -> str:
    return "length" if trace.finish_reason == "length" else "stop"
