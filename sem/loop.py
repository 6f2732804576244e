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
  (`<confidence>93</confidence>`) and the model's next request decides: a search call, or the answer stands.
- `never`: no search; a `<search>` the model writes gets a refusal in its `<result>`.
- `always`: naive RAG: one search with the question itself before the model writes anything, then no more.
- `confidence`: a gate for any model, trained or not: the model answers closed-book; when the least likely token of
  its answer span (inside `<answer>`, or an untagged answer's first sentence: `answer_confidence`, one scale for both)
  is below `confidence_threshold` (a probability), the question itself is searched and the model answers again.

Client-side search (OpenAI tool calls): with `client_search` the loop does not run a search, it ends at it
(`Trace.pending_search`, finish reason `tool_calls`) and the caller runs it. The next request brings the rounds back
(`ClientSearch`: the answer before the search, the query, what the caller's search returned); the loop rebuilds the
template from them, results neutralised like any retrieved text, and goes on: stateless, nothing kept in between.
The tool's text reaches the model as the service's own results do (`[1] title: text`, `sem.tool_results`), and a
query the client already answered is refused, not handed back (as a search past the budget is).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from sem import protocol
from sem.engines.base import Delta, Engine, SamplingOptions
from sem.errors import PromptTooLong
from sem.settings import LoopDefaults
from sem.tool_results import tool_passages
from sem.types import Passage, Retrieval

if TYPE_CHECKING:
    from sem.budget import Allowance
    from sem.domains import DomainFilter


class SearchPolicy(StrEnum):
    auto = "auto"
    never = "never"
    always = "always"
    confidence = "confidence"


class Searcher(Protocol):
    """What the loop needs from search: passages per query, cached or not (met by `sem.cache.CachedSearch`)."""

    async def retrieve(self, queries: list[str], k: int, mode: str | None = None, **given: Any) -> list[Retrieval]:
        """`given`: `domains` (a source filter) and `allowance` (the search budget), passed only when set."""
        ...


_DEFAULTS = LoopDefaults()  # the one place the loop's defaults are declared


@dataclass(slots=True)
class LoopOptions:
    policy: SearchPolicy = SearchPolicy.auto
    max_searches: int = _DEFAULTS.max_searches
    top_k: int = _DEFAULTS.top_k
    max_tokens: int = _DEFAULTS.max_tokens
    min_tokens: int = 0  # the model writes at least this many tokens before it may stop (vLLM's min_tokens)
    temperature: float = _DEFAULTS.temperature
    top_p: float = 1.0
    seed: int | None = None
    logprobs: bool = False
    passage_chars: int = _DEFAULTS.passage_chars
    # When the model ends without a usable answer, open <answer> for it and allow this many more tokens.
    # Serving wants an answer; training rollouts turn it off so a malformed output is scored as it is.
    force_answer: bool = True
    answer_tokens: int = 32
    max_prompt_tokens: int | None = None  # the service's cap; PromptTooLong beyond it
    confidence_threshold: float = 0.5  # `confidence` policy: search when the answer's least likely token is below
    # `auto`: after the first answer, write its confidence into the context (<confidence>93</confidence>) for the
    # model to read before it decides; the decision stays the model's (issue #40's named variant).
    confidence_note: bool = False
    search_mode: str | None = None  # one of the backend's modes (Milvus: bm25, dense, hybrid); None: its default
    client_search: bool = False  # end at a search (Trace.pending_search) for the caller to run, instead of running it
    domains: DomainFilter | None = None  # source filter: passages it does not allow never reach the model
    allowance: Allowance | None = None  # the search budget across requests, asked before each search
    search_budget_exhausted: bool = False  # the budget was spent before the request: answered as `never`, flagged

    @classmethod
    def from_defaults(cls, defaults: LoopDefaults, **overrides: object) -> LoopOptions:
        base: dict[str, object] = {
            "max_searches": defaults.max_searches,
            "top_k": defaults.top_k,
            "max_tokens": defaults.max_tokens,
            "temperature": defaults.temperature,
            "passage_chars": defaults.passage_chars,
        }
        if defaults.confidence_threshold is not None:
            base["confidence_threshold"] = defaults.confidence_threshold
        if defaults.policy is not None:
            base["policy"] = SearchPolicy(defaults.policy)
        if defaults.confidence_note is not None:
            base["confidence_note"] = defaults.confidence_note
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)  # type: ignore[arg-type]


@dataclass(slots=True)
class SearchRecord:
    query: str
    passages: list[Passage]
    cached: bool
    latency_ms: float
    error: str | None = None
    forced: bool = False  # inserted by the `always` policy, not written by the model
    client: bool = False  # run by the caller (a tool call), its result brought back in a later request
    dropped: int = 0  # passages the source filter kept from the model


@dataclass(frozen=True, slots=True)
class ClientSearch:
    """A search round the caller ran itself: the model's answer before it (None when the search was forced),
    the query, and the text the caller's search returned."""

    query: str
    result: str
    answer: str | None = None
    call_id: str = ""


# ---- events -------------------------------------------------------------------------------------------


@dataclass(slots=True)
class TextDelta:
    """Text the model generated."""

    text: str


@dataclass(slots=True)
class SearchCall:
    """A search is about to run (the model asked, or the `always` policy forced it)."""

    query: str
    index: int


@dataclass(slots=True)
class SearchResult:
    """A search finished; `inserted` is the `<result>` block appended to the context."""

    record: SearchRecord
    index: int
    inserted: str


@dataclass(slots=True)
class Inserted:
    """Text the system inserted that is not a search result (a forced search call, a refusal)."""

    text: str


@dataclass(slots=True)
class Final:
    trace: Trace


Event = TextDelta | SearchCall | SearchResult | Inserted | Final


@dataclass(slots=True)
class Segment:
    """A run of the completion: generated by the model, or inserted by the system."""

    text: str
    generated: bool


@dataclass(slots=True)
class Trace:
    """Everything one question produced. `loss_mask` is 1 on generated tokens, 0 on inserted ones."""

    request_id: str
    prompt: str
    prompt_ids: list[int]
    completion: str = ""
    completion_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] | None = None
    searches: list[SearchRecord] = field(default_factory=list)
    refused_searches: int = 0
    forced_answer: bool = False
    segments: list[Segment] = field(default_factory=list)
    finish_reason: str = "stop"
    engine_calls: int = 0
    # Tokens each request brought that the engine had not computed by the end of the previous one (the prompt, then
    # inserted results): what a prefix-caching engine prefills, block rounding aside.
    prefill_tokens: int = 0
    confidence: float | None = None  # `confidence` policy: the first answer's least likely token's probability
    seed_honoured: bool | None = None  # False when a seed was asked for and the engine could not honour it
    pending_search: str | None = None  # client_search: the query the loop stopped at, for the caller to run
    search_budget_exhausted: bool = False  # a search was refused (or never offered) because the budget is spent

    @property
    def answer(self) -> str:
        return protocol.final_answer(self.completion)

    @property
    def answers(self) -> list[str]:
        return protocol.extract_answers(self.completion)

    @property
    def search_count(self) -> int:
        return len(self.searches)

    @property
    def search_errors(self) -> list[str]:
        return [s.error for s in self.searches if s.error]

    @property
    def generated_tokens(self) -> int:
        return sum(self.loss_mask)

    @property
    def inserted_tokens(self) -> int:
        return len(self.loss_mask) - sum(self.loss_mask)

    @property
    def follows_template(self) -> bool:
        return protocol.follows_template(self.completion)


class _Builder:
    """Accumulates text, token ids, mask and log-probs in step."""

    def __init__(self, trace: Trace, tokenizer: object, want_logprobs: bool) -> None:
        self.trace = trace
        self.tokenizer = tokenizer
        self.parts: list[str] = []
        self.computed = 0  # context tokens the engine has computed (prefilled or generated) so far
        if want_logprobs:
            trace.logprobs = []

    def generated(self, text: str, ids: list[int], logprobs: list[float] | None) -> None:
        self.parts.append(text)
        self.trace.segments.append(Segment(text, True))
        self.trace.completion_ids.extend(ids)
        self.trace.loss_mask.extend([1] * len(ids))
        self.computed += len(ids)
        if self.trace.logprobs is not None:
            self.trace.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))

    def inserted(self, text: str) -> None:
        ids = self.tokenizer.encode(text, add_special_tokens=False)  # type: ignore[attr-defined]
        self.parts.append(text)
        self.trace.segments.append(Segment(text, False))
        self.trace.completion_ids.extend(ids)
        self.trace.loss_mask.extend([0] * len(ids))
        if self.trace.logprobs is not None:
            self.trace.logprobs.extend([0.0] * len(ids))

    @property
    def context_ids(self) -> list[int]:
        return self.trace.prompt_ids + self.trace.completion_ids

    def finish(self) -> Trace:
        self.trace.completion = "".join(self.parts)
        return self.trace


class SearchLoop:
    """Drives an engine through the template, running searches through a searcher."""

    def __init__(self, engine: Engine, searcher: Searcher, system_prompt: str = protocol.SYSTEM_PROMPT) -> None:
        self.engine = engine
        self.searcher = searcher
        self.system_prompt = system_prompt

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
        noting = opts.confidence_note and opts.policy is SearchPolicy.auto and opts.max_searches > 0
        out = _Builder(trace, tokenizer, opts.logprobs or opts.policy is SearchPolicy.confidence or noting)
        if opts.seed is not None and not getattr(self.engine, "honours_seed", True):
            trace.seed_honoured = False  # sampled unseeded rather than risk the engine (sem.engines.vllm)
        trace.search_budget_exhausted = opts.search_budget_exhausted
        for done in client_searches:
            async for event in self._replay(done, opts, out):
                yield event

        budget = opts.max_searches if opts.policy is SearchPolicy.auto else 0
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
            gate = _AnswerGate() if can_search and not (answering or deciding) else None
            delta = _Collect()
            pieces = self._generate(out, opts, stops, tokens_left, f"{request_id}-{turns}")
            try:
                async for piece in pieces:
                    delta.add(piece)
                    shown = gate.feed(piece.text) if gate else piece.text
                    if shown and not deciding:
                        yield TextDelta(shown)
                    if (gate and gate.answer_stands) or self._degenerate(delta, out, opts):
                        break
            finally:
                await pieces.aclose()  # aborts the engine request when we stopped early
            if gate and gate.answer_stands:
                delta.cut(gate.end, tokenizer)  # what followed the answer is not part of it
            elif gate and (rest := gate.flush()):
                yield TextDelta(rest)
            if deciding:
                if (
                    protocol.parse_step(delta.text).kind is not protocol.StepKind.search
                    or delta.finish_reason != "stop"
                ):
                    break  # no search call after the note: the first answer stands, what was written instead is cut
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
            if opts.policy is SearchPolicy.confidence and not trace.searches:  # the first answer, tagged or not
                trace.confidence = answer_confidence(delta.text, delta.token_ids, delta.logprobs, tokenizer)
                if opts.max_searches > 0 and (trace.confidence or 0.0) < opts.confidence_threshold:
                    call = "\n" + protocol.format_forced_search(question)
                    out.inserted(call)
                    yield Inserted(call)
                    if opts.client_search:
                        trace.pending_search = question
                        break
                    async for event in self._search(question, opts, out, forced=True):
                        yield event
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
            forced = _Collect()
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
    def _hand_over(query: str, out: _Builder) -> Final:
        """client_search: the loop ends at the search; the caller runs it and comes back with the result."""
        out.trace.pending_search = query
        out.trace.finish_reason = "tool_calls"
        return Final(out.finish())

    @staticmethod
    async def _replay(done: ClientSearch, opts: LoopOptions, out: _Builder) -> AsyncIterator[Event]:
        """A round the caller ran, back into the template (answer, search call, result block) and replayed as events
        (a stream shows it). All inserted, not this request's generation, and neutralised: it comes from the client."""
        call = (protocol.format_answer(done.answer) + " " if done.answer else "") + protocol.format_forced_search(
            done.query
        )
        out.inserted(call)
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
    def _degenerate(delta: _Collect, out: _Builder, opts: LoopOptions) -> bool:
        """A looping chunk, once the tokens the request asked for at least (min_tokens) are out."""
        written = out.trace.generated_tokens + len(delta.token_ids)
        return written >= opts.min_tokens and protocol.is_degenerate(delta.text)

    async def _generate(
        self,
        out: _Builder,
        opts: LoopOptions,
        stops: list[str],
        max_tokens: int,
        request_id: str,
        suppress: list[int] | None = None,
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
        )
        async for piece in self.engine.generate(context, params, request_id=request_id):
            yield piece

    async def _search(self, query: str, opts: LoopOptions, out: _Builder, *, forced: bool) -> AsyncIterator[Event]:
        index = out.trace.search_count
        yield SearchCall(query, index)
        given = {name: value for name in ("domains", "allowance") if (value := getattr(opts, name)) is not None}
        (found,) = await self.searcher.retrieve([query], opts.top_k, opts.search_mode, **given)
        if found.budget_exhausted:  # refused as a search past the request's own budget is; the model answers
            out.trace.search_budget_exhausted = True
            out.trace.refused_searches += 1
            refusal = protocol.format_refusal("the search budget is used up")
            out.inserted(refusal)
            yield Inserted(refusal)
            return
        record = SearchRecord(
            query, found.passages, found.cached, found.latency_ms, found.error, forced, dropped=found.dropped
        )
        out.trace.searches.append(record)
        block = protocol.format_result(
            found.passages, max_chars=opts.passage_chars, error="search unavailable" if found.error else None
        )
        out.inserted(block)
        yield SearchResult(record, index, block)


class _AnswerGate:
    """Reads one engine request's text as it streams and holds back what follows a closed `</answer>` until that
    text opens `<search>` (the model's search call: shown) or cannot (the answer stands: cut at `end`).

    >>> gate = _AnswerGate()
    >>> gate.feed("<answer>Paris</answer>"), gate.feed(" <sea"), gate.answer_stands
    ('<answer>Paris</answer>', '', False)
    >>> gate.feed("rch> q"), gate.answer_stands
    (' <search> q', False)
    >>> gate = _AnswerGate()
    >>> gate.feed("<answer>Paris</answer> Thank you!"), gate.answer_stands, gate.end
    ('<answer>Paris</answer>', True, 22)
    """

    def __init__(self) -> None:
        self.text = ""
        self.shown = 0  # characters already passed on
        self.answer_stands = False
        self.end = 0  # where the text is cut when the answer stands

    def feed(self, piece: str) -> str:
        """Take the next piece of text; return what can be shown now."""
        self.text += piece
        close = self.text.rfind(protocol.ANSWER_CLOSE)
        show_to = len(self.text)
        if close >= 0:
            after = close + len(protocol.ANSWER_CLOSE)
            head = self.text[after:].lstrip()
            if head.startswith(protocol.SEARCH_OPEN):
                pass  # the model searches: everything is its own
            elif protocol.SEARCH_OPEN.startswith(head):  # nothing yet, or a prefix of <search>: wait
                show_to = after
            else:
                self.answer_stands, self.end, show_to = True, after, after
        return self._show(show_to)

    def flush(self) -> str:
        """What was held back, once the request ended on its own (EOS, length)."""
        return self._show(len(self.text))

    def _show(self, upto: int) -> str:
        shown, self.shown = self.text[self.shown : upto], max(self.shown, upto)
        return shown


class _Collect:
    """Joins the deltas of one engine call; the text is cut after the first stop string."""

    def __init__(self) -> None:
        self.text = ""
        self.token_ids: list[int] = []
        self.logprobs: list[float] | None = None
        self.finish_reason: str | None = None
        self.stop: str | None = None

    def add(self, delta: Delta) -> None:
        self.text += delta.text
        self.token_ids.extend(delta.token_ids)
        if delta.logprobs is not None:
            self.logprobs = (self.logprobs or []) + delta.logprobs
        if delta.finish_reason:
            self.finish_reason = delta.finish_reason
            self.stop = delta.stop

    def cut(self, chars: int, tokenizer: object) -> None:
        """Keep the first `chars` characters and the fewest tokens that spell them; the turn ended there."""
        lo = _tokens_to_spell(tokenizer, self.token_ids, chars)
        self.text, self.token_ids = self.text[:chars], self.token_ids[:lo]
        if self.logprobs is not None:
            self.logprobs = self.logprobs[:lo]
        self.finish_reason, self.stop = "stop", protocol.ANSWER_CLOSE


def _tokens_to_spell(tokenizer: object, ids: list[int], chars: int) -> int:
    """The fewest leading tokens whose text is at least `chars` characters long."""
    decode = tokenizer.decode  # type: ignore[attr-defined]
    lo, hi = 0, len(ids)
    while lo < hi:  # the decoded length grows with the token count: bisect on it
        mid = (lo + hi) // 2
        if len(decode(ids[:mid], skip_special_tokens=True)) >= chars:
            hi = mid
        else:
            lo = mid + 1
    return lo


def answer_confidence(text: str, ids: list[int], logprobs: list[float] | None, tokenizer: object) -> float | None:
    """How sure the model was of its answer: the probability of the least likely token of its answer span; None
    without log-probs. One scale, tagged or not, so one threshold serves both (the minimum ranks a small model's wrong
    closed-book answers below its right ones better than the mean or the first token: ../shared/EVALUATION.md,
    AUROC 0.68 vs 0.60 and 0.57 for SmolLM2-135M).

    The span: inside the last closed `<answer>`; without one, the first sentence or line after a leading `<think>`,
    at most `_UNTAGGED_SPAN_TOKENS` tokens. An untagged answer is stated there, often after a restated question ("The
    capital of France is Paris."); what follows is elaboration, whose rarest word is no doubt about the answer.
    Neither `</answer>` nor the sentence's end mark is scored: the same answer tokens score the same, tagged or not.
    """
    if not logprobs:
        return None
    close = text.rfind(protocol.ANSWER_CLOSE)
    opened = text.rfind(protocol.ANSWER_OPEN, 0, max(close, 0))
    if close >= 0 and opened >= 0:
        start, end = _token_span(tokenizer, ids, opened + len(protocol.ANSWER_OPEN), close)
    else:
        start, end = _token_span(tokenizer, ids, *_first_sentence(text))
        end = min(end, start + _UNTAGGED_SPAN_TOKENS)
    start = min(start, len(logprobs) - 1)  # never an empty span: an empty answer is scored on its next token
    return math.exp(min(logprobs[start : max(end, start + 1)]))


# An untagged answer's span, at most: a restated question and its answer, not a paragraph (the loop's forced answer
# gets as many tokens: LoopOptions.answer_tokens).
_UNTAGGED_SPAN_TOKENS = 32
# Before an untagged answer: blanks, a `<think>` block (closed or not), an `<answer>` left open.
_ANSWER_LEAD = re.compile(r"\s*(?:<think>(?:.*?</think>)?\s*)?(?:<answer>\s*)*", re.DOTALL)
# Where its first sentence ends: a line break, a tag, or . ! ? before a blank or the end of the text ...
_SENTENCE_END = re.compile(r"\n|<(?=/?[a-z])|[.!?](?=\s|$)")
# ... unless the period closes an initial ("J. K. Rowling", "A. Daily") or a title ("Dr. Who").
_NOT_AN_END = re.compile(r"(?:\b[A-Z]|\b(?:Mr|Mrs|Ms|Dr|St|Mt))$")


def _first_sentence(text: str) -> tuple[int, int]:
    """Character bounds of an untagged answer: the first sentence or line after what leads to it.

    >>> text = "<think>hmm</think> William Shakespeare wrote it. J. K. Rowling did not."
    >>> text[slice(*_first_sentence(text))]
    'William Shakespeare wrote it'
    >>> text = "J. K. Rowling wrote it\\nin 1997."
    >>> text[slice(*_first_sentence(text))]
    'J. K. Rowling wrote it'
    """
    start = _ANSWER_LEAD.match(text).end()  # type: ignore[union-attr]  # it matches the empty string
    for end in _SENTENCE_END.finditer(text, start):
        if end.group() in ".!?" and _NOT_AN_END.search(text[start : end.start()]):
            continue
        return start, end.start()
    return start, len(text)


def _token_span(tokenizer: object, ids: list[int], start_char: int, end_char: int) -> tuple[int, int]:
    """The tokens that spell text[start_char:end_char], with those shared with its neighbours; at least one."""
    start = _tokens_to_spell(tokenizer, ids, start_char)
    decode = tokenizer.decode  # type: ignore[attr-defined]
    if start and len(decode(ids[:start], skip_special_tokens=True)) > start_char:
        start -= 1  # that token also holds the span's first characters
    return start, max(_tokens_to_spell(tokenizer, ids, end_char), start + 1)


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
