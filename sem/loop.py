"""The search loop: generate -> stop at </search> -> search -> insert <result> -> resume.

One implementation for serving (`/v1/answer`, streaming chat) and for training rollouts: what the model is
trained on is exactly what it is served with. `SearchLoop.stream` yields typed events as they happen;
`SearchLoop.run` collects them into a `Trace`.

One engine request per segment: the model generates until `</search>` or the end of its turn, and the loop reads
`</answer>` in the stream instead of stopping on it, so the model's own next tokens decide between ending and
searching. Engine requests per answer = searches + 1 (plus one when an answer has to be forced).

Policies (also the evaluation baselines):
- `auto`: the model decides. What follows an `</answer>` is held back until it opens `<search>` (the search runs,
  within `max_searches`) or does not (the answer stands and the request is cut there).
  With `confidence_note`, the first answer's confidence (`answer_confidence`) is written after it
  (`<confidence>93</confidence>`) and the model's next token decides, as `trainer decide` trains it: the end of
  its turn lets the answer stand; anything else is a search (its own call if it writes one, else the question,
  after the decision token as generated). With `decision_threshold`, the model's P(search) there (1 - P(end of
  turn)) is read against that cut instead, as `confidence`'s threshold reads the answer's confidence.
- `never`: no search; a `<search>` the model writes gets a refusal in its `<result>`.
- `always`: naive RAG: one search with the question itself before the model writes anything, then no more.
- `confidence`: a gate for any model, trained or not: the model answers closed-book; when the least likely token of
  its answer span (inside `<answer>`, or an untagged answer's first sentence: `answer_confidence`, one scale for both)
  is below `confidence_threshold` (a probability), the question itself is searched and the model answers again.
- `either`: the combined gate: `auto` (with its note, when configured), and when the model's decision lets its first
  answer stand though that answer's confidence is below `confidence_threshold`, `confidence`'s search of the question.

`read_fresh` (any policy that searches after a first answer): from the first search on, the model's context is the
prompt, the search call and what follows; the first answer (its note, the model's call) stays in the trace and the
stream but is set aside (`Trace.fresh_from`), so the answer after the search is read as `always` reads it, not
anchored on the first one; a search that found nothing to read leaves it in. Such a trace is not one context:
training refuses it (`sem.trace.require_one_context`).

Client-side search (OpenAI tool calls): with `client_search` the loop does not run a search, it ends at it
(`Trace.pending_search`, finish reason `tool_calls`) and the caller runs it. The next request brings the rounds back
(`ClientSearch`: the model's turn that searched, or the answer before it, the query, what the caller's search
returned); the loop rebuilds the template from them, results neutralised like any retrieved text, and goes on. The
loop keeps nothing between the requests (the service may keep the turn: `service.tool_turns`).
The tool's text reaches the model as the service's own results do (`[1] title: text`, `sem.tool_results`), and a
query the client already answered is refused, not handed back (as a search past the budget is).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import AsyncIterator, Sequence

from sem import protocol
from sem.confidence import answer_confidence
from sem.engines.base import Delta, Engine, SamplingOptions
from sem.errors import PromptTooLong
from sem.loop_options import LoopOptions, Searcher, SearchPolicy
from sem.search import guards
from sem.tool_results import tool_passages
from sem.trace import (
    ClientSearch,
    Event,
    Final,
    Inserted,
    SearchCall,
    SearchRecord,
    SearchResult,
    Segment,
    TextDelta,
    Trace,
    TraceBuilder,
)
from sem.turns import AnswerGate, TurnCollector, may_open_search

DECISION_TOP_K = 20  # tokens whose log-probabilities a decision_threshold reads (an end of turn outside: P < 1/20)

# The loop's public names, wherever they are defined (callers import them from here).
__all__ = [
    "ClientSearch",
    "Event",
    "Final",
    "Inserted",
    "LoopOptions",
    "SearchCall",
    "SearchLoop",
    "SearchPolicy",
    "SearchRecord",
    "SearchResult",
    "Searcher",
    "Segment",
    "TextDelta",
    "Trace",
    "answer_confidence",
    "check_prompt_length",
]


class SearchLoop:
    """Drives an engine through the template, running searches through a searcher."""

    def __init__(self, engine: Engine, searcher: Searcher, system_prompt: str = protocol.SYSTEM_PROMPT,
                 adapter: str | None = None) -> None:  # fmt: skip
        self.engine = engine
        self.searcher = searcher
        self.system_prompt = system_prompt
        self.adapter = adapter  # the engine's LoRA adapter this loop's model is (`SEM_ADAPTERS`), or its own weights

    async def run(
        self,
        question: str,
        options: LoopOptions | None = None,
        *,
        history: Sequence[dict[str, str]] = (),
        request_id: str | None = None,
        client_searches: Sequence[ClientSearch] = (),
    ) -> Trace:
        """Answer one question; returns the whole trace."""
        events = self.stream(question, options, history=history, request_id=request_id, client_searches=client_searches)
        async for event in events:
            if isinstance(event, Final):
                return event.trace
        raise AssertionError("the loop ended without a Final event")  # stream always ends with Final

    def prompt_tokens(self, question: str, history: Sequence[dict[str, str]] = ()) -> int:
        """Tokens of the prompt this question (and history) would start from: for limits checked up front."""
        messages = protocol.build_messages(question, history, self.system_prompt)
        prompt = protocol.render_prompt(self.engine.tokenizer, messages)
        return len(self.engine.tokenizer.encode(prompt, add_special_tokens=False))  # type: ignore[attr-defined]

    async def stream(
        self,
        question: str,
        options: LoopOptions | None = None,
        *,
        history: Sequence[dict[str, str]] = (),
        request_id: str | None = None,
        client_searches: Sequence[ClientSearch] = (),
    ) -> AsyncIterator[Event]:
        """Answer one question, yielding events as they happen; the last one is `Final`.

        `client_searches`: the rounds the caller already ran (client_search), rebuilt into the template first."""
        opts = options or LoopOptions()
        request_id = request_id or f"sem-{uuid.uuid4().hex}"
        tokenizer = self.engine.tokenizer
        messages = protocol.build_messages(question, history, self.system_prompt)
        prompt = protocol.render_prompt(tokenizer, messages)
        trace = Trace(request_id, prompt, tokenizer.encode(prompt, add_special_tokens=False))
        check_prompt_length(len(trace.prompt_ids), opts.max_prompt_tokens)
        noting = opts.confidence_note and opts.policy.model_decides and opts.max_searches > 0
        out = TraceBuilder(trace, tokenizer, opts.logprobs or opts.policy.reads_confidence or noting)
        if opts.seed is not None and not getattr(self.engine, "honours_seed", True):
            trace.seed_honoured = False  # sampled unseeded rather than risk the engine (sem.engines.vllm)
        trace.search_budget_exhausted = opts.search_budget_exhausted
        for done in client_searches:
            async for event in self._replay(done, opts, out):
                yield event

        budget = opts.max_searches if opts.policy.model_decides else 0
        if opts.policy is SearchPolicy.always and not trace.searches:
            call = protocol.format_forced_search(question)
            out.inserted(call)
            yield Inserted(call)
            if opts.client_search:
                yield self._hand_over(question, out)
                return
            async for event in self._search(question, opts, out, forced=True):
                yield event

        tokens_left = opts.max_tokens
        turns = 0
        noted = False  # confidence_note: the note is in, the next request decides
        max_turns = opts.max_searches + 4  # searches, refusals and a final answer, bounded
        while tokens_left > 0:
            turns += 1
            if turns > max_turns:
                trace.finish_reason = "max_turns"
                break
            # With a search left, only </search> stops the engine and the gate reads </answer> in the stream;
            # without one, the first </answer> ends the turn (a later <search> could only be refused).
            can_search = trace.search_count < budget and not trace.search_budget_exhausted
            # confidence_note: the first answer ends its request (the note goes in after it); the request after the
            # note is the decision, held back until it is known to be a search.
            answering = noting and can_search and not trace.searches and not noted
            deciding = noting and can_search and not trace.searches and noted
            closes = can_search and not answering
            stops = [protocol.SEARCH_CLOSE] if closes else [protocol.SEARCH_CLOSE, protocol.ANSWER_CLOSE]
            gate = AnswerGate() if can_search and not (answering or deciding) else None
            cut = opts.decision_threshold if deciding else None  # the decision read at a cut, not sampled
            delta = TurnCollector()
            pieces = self._generate(out, opts, stops, tokens_left, f"{request_id}-{turns}",
                                    top_logprobs=DECISION_TOP_K if cut is not None else 0)  # fmt: skip
            try:
                async for piece in pieces:
                    delta.add(piece)
                    shown = gate.feed(piece.text) if gate else piece.text
                    if shown and not deciding:
                        yield TextDelta(shown)
                    if (gate and gate.answer_stands) or self._degenerate(delta, out, opts):
                        break
                    if cut is not None and trace.decision_p_search is None and piece.top_logprobs:
                        trace.decision_p_search = p_search(piece.top_logprobs[0], tokenizer.eos_token_id)
                        if trace.decision_p_search <= cut:
                            break  # the answer stands, whatever token was sampled
                    if deciding and not may_open_search(delta.text):
                        break  # a search, but not a call of its own: the question is searched below
            finally:
                await pieces.aclose()  # aborts the engine request when we stopped early
            if gate and gate.answer_stands:
                delta.cut(gate.end, tokenizer)  # what followed the answer is not part of it
            elif gate and (rest := gate.flush()):
                yield TextDelta(rest)
            if deciding:
                # The token after the note is the decision trained (P(search) = 1 - P(end of turn)): the end of
                # the turn lets the first answer stand (unless `either` finds it unsure); any other token is a
                # search, its own call when it wrote one, else the question, that token kept as generated and the
                # rest cut. With a decision_threshold, P(search) read against it decides instead of the sample
                # (the engine could not tell it: the sample decides).
                sampled = bool(delta.token_ids) and delta.token_ids[0] != tokenizer.eos_token_id
                read = trace.decision_p_search
                decided = read > cut if cut is not None and read is not None else sampled
                own_call = protocol.parse_step(delta.text).kind is protocol.StepKind.search
                if not (decided and own_call and delta.finish_reason == "stop"):
                    if not decided and not self._unsure(trace, opts):
                        break
                    lead = ""
                    if decided and sampled:
                        lead = tokenizer.decode(delta.token_ids[:1], skip_special_tokens=True)
                        out.generated(lead, delta.token_ids[:1], delta.logprobs[:1] if delta.logprobs else None)
                        tokens_left -= 1
                        if lead:
                            yield TextDelta(lead)
                    async for event in self._search_question(question, opts, out, after=lead):
                        yield event
                    if trace.pending_search is not None:
                        break
                    continue
                yield TextDelta(delta.text)
            if self._degenerate(delta, out, opts):
                delta.finish_reason = "degenerate"
            if delta.finish_reason == "degenerate" and opts.force_answer:
                # Serving drops a looping chunk and asks for an answer below; training keeps it (force_answer
                # off) so the reward sees what the policy did.
                tokens_left -= len(delta.token_ids)
                trace.finish_reason = "degenerate"
                break
            out.generated(delta.text, delta.token_ids, delta.logprobs)
            tokens_left -= len(delta.token_ids)
            if delta.finish_reason != "stop":
                trace.finish_reason = delta.finish_reason or "length"
                break
            step = protocol.parse_step(delta.text)
            if step.kind is protocol.StepKind.search:
                reason = None
                if opts.policy is SearchPolicy.never:
                    reason = "searching is turned off for this question"
                elif trace.search_count >= budget or trace.search_budget_exhausted:
                    reason = "the search budget is used up"
                elif not step.query:
                    reason = "the search query was empty"
                elif opts.client_search and _searched(step.query, trace):
                    # The client answered this query already: handing it back would loop (issue #29's agent went
                    # three rounds on one query); refused as a search past the budget is, and the model answers.
                    reason = "that query was searched already; its results are above"
                if reason:
                    trace.refused_searches += 1
                    refusal = protocol.format_refusal(reason)
                    out.inserted(refusal)
                    yield Inserted(refusal)
                    continue
                if opts.client_search:
                    trace.pending_search = step.query
                    break
                async for event in self._search(step.query or "", opts, out, forced=False):
                    yield event
                continue
            if answering and protocol.ANSWER_CLOSE in delta.text:  # the first answer, closed: its note goes in
                trace.confidence = answer_confidence(delta.text, delta.token_ids, delta.logprobs, tokenizer)
                note = protocol.format_confidence(trace.confidence or 0.0)
                out.inserted(note)
                noted = True
                yield Inserted(note)
                continue
            if opts.policy.reads_confidence and not trace.searches:  # the first answer, tagged or not
                trace.confidence = answer_confidence(delta.text, delta.token_ids, delta.logprobs, tokenizer)
                if self._unsure(trace, opts):
                    async for event in self._search_question(question, opts, out):
                        yield event
                    if trace.pending_search is not None:
                        break
                    continue
            break  # an answer that stands, or EOS without a tag: the model is done
        if trace.pending_search is not None:
            yield self._hand_over(trace.pending_search, out)
            return
        if tokens_left <= 0 and trace.finish_reason == "stop":
            trace.finish_reason = "length"
        if opts.force_answer and not protocol.final_answer("".join(out.parts)):
            # The model never produced a usable answer: open one for it and let it fill in a few tokens.
            trace.forced_answer = True
            opener = ("" if out.parts and out.parts[-1].endswith("\n") else "\n") + protocol.ANSWER_OPEN
            out.inserted(opener)
            yield Inserted(opener)
            forced = TurnCollector()
            stops = [protocol.ANSWER_CLOSE, protocol.ANSWER_OPEN, protocol.SEARCH_OPEN, protocol.RESULT_OPEN]
            # One plain line: no tag openers, no line breaks (small models answer "<answer>" with "<answer>").
            plain = _single_token_ids(tokenizer, ["<", "\n", "\n\n"])
            answer_id = f"{request_id}-answer"
            async for piece in self._generate(out, opts, stops, opts.answer_tokens, answer_id, suppress=plain):
                forced.add(piece)
                if piece.text:
                    yield TextDelta(piece.text)
            out.generated(forced.text, forced.token_ids, forced.logprobs)
        yield Final(out.finish())

    @staticmethod
    def _unsure(trace: Trace, opts: LoopOptions) -> bool:
        """`confidence`'s test of a first answer that would stand (`either` asks it after the model's decision)."""
        return (
            opts.policy.reads_confidence
            and opts.max_searches > 0
            and not trace.searches
            and (trace.confidence or 0.0) < opts.confidence_threshold
        )

    async def _search_question(self, question: str, opts: LoopOptions, out: TraceBuilder,
                               after: str = "") -> AsyncIterator[Event]:  # fmt: skip
        """The gate's own search: the question itself, after the first answer (handed over under client_search);
        `after`: what the model wrote last (a line break it wrote is not doubled)."""
        call = ("" if after.endswith("\n") else "\n") + protocol.format_forced_search(question)
        out.inserted(call)
        yield Inserted(call)
        if opts.client_search:
            out.trace.pending_search = question
            return
        async for event in self._search(question, opts, out, forced=True):
            yield event

    @staticmethod
    def _hand_over(query: str, out: TraceBuilder) -> Final:
        """client_search: the loop ends at the search; the caller runs it and comes back with the result."""
        out.trace.pending_search = query
        out.trace.finish_reason = "tool_calls"
        return Final(out.finish())

    @staticmethod
    async def _replay(done: ClientSearch, opts: LoopOptions, out: TraceBuilder) -> AsyncIterator[Event]:
        """A round the caller ran, back into the template (the turn that searched, the result block) and replayed as
        events (a stream shows it). All inserted, not this request's generation; the tool's text is neutralised, the
        turn is the model's own (checked by `protocol.search_turn`) or rebuilt from the answer and the query."""
        if done.turn:
            call = done.turn  # rebuilt without its think, the 135M default model copies its first answer (issue #43)
        else:
            answer = protocol.format_answer(done.answer) + " " if done.answer else ""
            call = answer + protocol.format_forced_search(done.query)
        out.inserted(call)
        if opts.read_fresh and out.trace.fresh_from is None and protocol.extract_answers(call):
            out.read_fresh(protocol.format_forced_search(done.query))  # as a search the loop ran itself
        yield Inserted(call)
        # The tool's text read into passages and inserted as the service's own results are ([1] title: text), at
        # most top_k of them; a single passage (plain text) may use the whole block's room.
        passages = tool_passages(done.result, done.call_id)[: opts.top_k]
        record = SearchRecord(done.query, passages, cached=False, latency_ms=0.0, client=True)
        room = opts.passage_chars * (1 if len(passages) > 1 else opts.top_k)
        block = protocol.format_result(passages, max_chars=room)
        out.inserted(block)
        out.trace.searches.append(record)
        yield SearchResult(record, out.trace.search_count - 1, block)

    @staticmethod
    def _degenerate(delta: TurnCollector, out: TraceBuilder, opts: LoopOptions) -> bool:
        """A looping chunk, once the tokens the request asked for at least (min_tokens) are out."""
        written = out.trace.generated_tokens + len(delta.token_ids)
        return written >= opts.min_tokens and protocol.is_degenerate(delta.text)

    async def _generate(
        self,
        out: TraceBuilder,
        opts: LoopOptions,
        stops: list[str],
        max_tokens: int,
        request_id: str,
        suppress: list[int] | None = None,
        top_logprobs: int = 0,
    ) -> AsyncIterator[Delta]:
        out.trace.engine_calls += 1
        context = out.context_ids
        out.trace.prefill_tokens += len(context) - out.computed
        out.computed = len(context)
        params = SamplingOptions(
            max_tokens=max_tokens,
            min_tokens=min(max_tokens, max(0, opts.min_tokens - out.trace.generated_tokens)),
            temperature=opts.temperature,
            top_p=opts.top_p,
            stop=stops,
            seed=opts.seed,
            logprobs=out.trace.logprobs is not None,
            suppress_token_ids=suppress or [],
            top_logprobs=top_logprobs,
            adapter=self.adapter,
        )
        async for piece in self.engine.generate(context, params, request_id=request_id):
            yield piece

    async def _search(self, query: str, opts: LoopOptions, out: TraceBuilder, *, forced: bool) -> AsyncIterator[Event]:
        index = out.trace.search_count
        yield SearchCall(query, index)
        (found,) = await guards.retrieve(self.searcher, [query], opts.top_k, opts.search_mode,
                                         domains=opts.domains, allowance=opts.allowance)  # fmt: skip
        if found.budget_exhausted:  # refused as a search past the request's own budget is; the model answers
            out.trace.search_budget_exhausted = True
            out.trace.refused_searches += 1
            refusal = protocol.format_refusal("the search budget is used up")
            out.inserted(refusal)
            yield Inserted(refusal)
            return
        # read_fresh: the first answer leaves the context, unless the search brought nothing to read in its place
        if opts.read_fresh and out.trace.fresh_from is None and out.trace.generated_tokens and found.passages:
            out.read_fresh(protocol.format_forced_search(query))
        record = SearchRecord(
            query, found.passages, found.cached, found.latency_ms, found.error, forced, dropped=found.dropped
        )
        out.trace.searches.append(record)
        block = protocol.format_result(
            found.passages, max_chars=opts.passage_chars, error="search unavailable" if found.error else None
        )
        out.inserted(block)
        yield SearchResult(record, index, block)


def p_search(top: dict[int, float], eos_id: int) -> float:
    """P(search) at the decision, 1 - P(end of turn), from the most likely tokens' log-probabilities there; an end
    of turn outside them counts as 0 (it is below the least likely of them: under 1/k).

    >>> round(p_search({2: math.log(0.3), 7: math.log(0.6)}, eos_id=2), 6), p_search({7: -0.1}, eos_id=2)
    (0.7, 1.0)
    """
    return 1.0 - math.exp(top[eos_id]) if eos_id in top else 1.0


def _single_token_ids(tokenizer: object, texts: list[str]) -> list[int]:
    """Token ids of the texts that are one token each in this tokenizer."""
    ids = [tokenizer.encode(t, add_special_tokens=False) for t in texts]  # type: ignore[attr-defined]
    return [i[0] for i in ids if len(i) == 1]


def _searched(query: str, trace: Trace) -> bool:
    """Whether the trace already holds a search for this query (case, spacing and punctuation aside)."""
    words = _query_words(query)
    return any(_query_words(record.query) == words for record in trace.searches)


def _query_words(query: str) -> list[str]:
    return re.findall(r"\w+", query.lower())


def check_prompt_length(tokens: int, cap: int | None) -> None:
    if cap is not None and tokens > cap:
        raise PromptTooLong(
            f"the prompt has {tokens} tokens, more than the {cap} allowed: shorten the question or the conversation"
        )
