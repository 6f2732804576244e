"""`POST /v1/answer`'s response from the loop's trace."""

from __future__ import annotations

import time

from sem.loop import Trace
from service.answer.protocol import AnswerResponse, TraceOut
from service.traces import citation_out, citations_of, search_out, usage_of


def to_response(
    trace: Trace, model: str, started: float, *, with_trace: bool, passage_chars: int | None = None
) -> AnswerResponse:
    return AnswerResponse(
        id=trace.request_id,
        created=int(time.time()),
        model=model,
        answer=trace.answer,
        search_count=trace.search_count,
        searches=[search_out(s) for s in trace.searches],
        search_errors=trace.search_errors,
        search_budget_exhausted=trace.search_budget_exhausted,
        citations=[citation_out(c) for c in citations_of(trace, trace.answer, passage_chars)],
        confidence=trace.confidence,
        seed_honoured=trace.seed_honoured,
        finish_reason=trace.finish_reason,
        usage=usage_of(trace),
        latency_ms=round((time.perf_counter() - started) * 1000, 1),
        trace=TraceOut(
            text=trace.completion,
            answers=trace.answers,
            follows_template=trace.follows_template,
            refused_searches=trace.refused_searches,
            engine_calls=trace.engine_calls,
            prefill_tokens=trace.prefill_tokens,
        )
        if with_trace
        else None,
    )
