"""The search loop: generate -> stop at </search> -> search -> insert <result> -> resume.

One implementation for serving (`/v1/answer`, streaming chat) and for training rollouts: what the model is
trained on is exactly what it is served with. `SearchLoop.stream` yields typed events as they happen;
`SearchLoop.run` collects them into a `Trace`.

Policies (also the evaluation baselines):
- `auto`: the model decides. After each `</answer>` a few tokens are peeked: if the model opens `<search>`,
  the search runs (within `max_searches`); otherwise the answer stands.
- `never`: no search; a `<search>` the model writes gets a refusal in its `<result>`.
- `always`: naive RAG: one search with the question itself before the model writes anything, then no more.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from sem import protocol
from sem.cache import Retrieval
from sem.engines.base import Delta, Engine, SamplingOptions
from sem.search.base import Passage
from sem.settings import LoopDefaults


class SearchPolicy(StrEnum):
    auto = "auto"
    never = "never"
    always = "always"


class Retriever(Protocol):
    """What the loop needs from search (met by `sem.cache.CachedSearch`)."""

    async def retrieve(self, queries: list[str], k: int) -> list[Retrieval]: ...


@dataclass(slots=True)
class LoopOptions:
    policy: SearchPolicy = SearchPolicy.auto
    max_searches: int = 3
    top_k: int = 3
    max_tokens: int = 384
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    logprobs: bool = False
    passage_chars: int = 600
    peek_tokens: int = 6  # enough for the tokens of "<search>" after "</answer>"

    @classmethod
    def from_defaults(cls, defaults: LoopDefaults, **overrides: object) -> LoopOptions:
        base = {
            "max_searches": defaults.max_searches,
            "top_k": defaults.top_k,
            "max_tokens": defaults.max_tokens,
            "temperature": defaults.temperature,
            "passage_chars": defaults.passage_chars,
        }
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
    finish_reason: str = "stop"
    engine_calls: int = 0

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
        if want_logprobs:
            trace.logprobs = []

    def generated(self, text: str, ids: list[int], logprobs: list[float] | None) -> None:
        self.parts.append(text)
        self.trace.completion_ids.extend(ids)
        self.trace.loss_mask.extend([1] * len(ids))
        if self.trace.logprobs is not None:
            self.trace.logprobs.extend(logprobs if logprobs is not None else [0.0] * len(ids))

    def inserted(self, text: str) -> None:
        ids = self.tokenizer.encode(text, add_special_tokens=False)  # type: ignore[attr-defined]
        self.parts.append(text)
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
    """Drives an engine through the template, running searches through a retriever."""

    def __init__(self, engine: Engine, retriever: Retriever, system_prompt: str = protocol.SYSTEM_PROMPT) -> None:
        self.engine = engine
        self.retriever = retriever
        self.system_prompt = system_prompt

    async def run(
        self,
        question: str,
        options: LoopOptions | None = None,
        *,
        history: Sequence[dict[str, str]] = (),
        request_id: str | None = None,
    ) -> Trace:
        """Answer one question; returns the whole trace."""
        async for event in self.stream(question, options, history=history, request_id=request_id):
            if isinstance(event, Final):
                return event.trace
        raise AssertionError("the loop ended without a Final event")  # stream always ends with Final

    async def stream(
        self,
        question: str,
        options: LoopOptions | None = None,
        *,
        history: Sequence[dict[str, str]] = (),
        request_id: str | None = None,
    ) -> AsyncIterator[Event]:
        """Answer one question, yielding events as they happen; the last one is `Final`."""
        opts = options or LoopOptions()
        request_id = request_id or f"sem-{uuid.uuid4().hex}"
        tokenizer = self.engine.tokenizer
        messages = protocol.build_messages(question, history, self.system_prompt)
        prompt = protocol.render_prompt(tokenizer, messages)
        trace = Trace(request_id, prompt, tokenizer.encode(prompt, add_special_tokens=False))
        out = _Builder(trace, tokenizer, opts.logprobs)

        budget = opts.max_searches if opts.policy is SearchPolicy.auto else 0
        if opts.policy is SearchPolicy.always:
            call = protocol.format_forced_search(question)
            out.inserted(call)
            yield Inserted(call)
            async for event in self._search(question, opts, out, forced=True):
                yield event

        tokens_left = opts.max_tokens
        turns = 0
        max_turns = opts.max_searches + 4  # searches, refusals and a final answer, bounded
        while tokens_left > 0:
            turns += 1
            if turns > max_turns:
                trace.finish_reason = "max_turns"
                break
            stops = [protocol.SEARCH_CLOSE, protocol.ANSWER_CLOSE]
            delta = _Collect()
            async for piece in self._generate(out, opts, stops, tokens_left, f"{request_id}-{turns}"):
                delta.add(piece)
                if piece.text:
                    yield TextDelta(piece.text)
            out.generated(delta.text, delta.token_ids, delta.logprobs)
            tokens_left -= len(delta.token_ids)
            if delta.finish_reason != "stop":
                trace.finish_reason = delta.finish_reason or "length"
                break
            step = protocol.parse_step(delta.text)
            if step.kind is protocol.StepKind.answer:
                if budget - trace.search_count <= 0 or tokens_left <= 0:
                    break
                # The template puts a search after the first answer: peek whether the model opens one.
                peek = _Collect()
                async for piece in self._generate(
                    out, opts, [protocol.SEARCH_CLOSE], min(opts.peek_tokens, tokens_left), f"{request_id}-p{turns}"
                ):
                    peek.add(piece)
                if not peek.text.lstrip().startswith(protocol.SEARCH_OPEN):
                    break  # the answer stands; the peeked tokens are dropped
                out.generated(peek.text, peek.token_ids, peek.logprobs)
                tokens_left -= len(peek.token_ids)
                yield TextDelta(peek.text)
                if peek.finish_reason != "stop" or protocol.parse_step(peek.text).kind is not protocol.StepKind.search:
                    continue  # the query is longer than the peek: generate on to </search>
                step = protocol.parse_step(peek.text)
            if step.kind is protocol.StepKind.search:
                reason = None
                if opts.policy is SearchPolicy.never:
                    reason = "searching is turned off for this question"
                elif trace.search_count >= budget:
                    reason = "the search budget is used up"
                elif not step.query:
                    reason = "the search query was empty"
                if reason:
                    trace.refused_searches += 1
                    refusal = protocol.format_refusal(reason)
                    out.inserted(refusal)
                    yield Inserted(refusal)
                    continue
                async for event in self._search(step.query or "", opts, out, forced=False):
                    yield event
                continue
            break  # EOS without a tag: the model is done
        if tokens_left <= 0 and trace.finish_reason == "stop":
            trace.finish_reason = "length"
        yield Final(out.finish())

    async def _generate(
        self, out: _Builder, opts: LoopOptions, stops: list[str], max_tokens: int, request_id: str
    ) -> AsyncIterator[Delta]:
        out.trace.engine_calls += 1
        params = SamplingOptions(
            max_tokens=max_tokens,
            temperature=opts.temperature,
            top_p=opts.top_p,
            stop=stops,
            seed=opts.seed,
            logprobs=opts.logprobs,
        )
        async for piece in self.engine.generate(out.context_ids, params, request_id=request_id):
            yield piece

    async def _search(self, query: str, opts: LoopOptions, out: _Builder, *, forced: bool) -> AsyncIterator[Event]:
        index = out.trace.search_count
        yield SearchCall(query, index)
        (found,) = await self.retriever.retrieve([query], opts.top_k)
        record = SearchRecord(query, found.passages, found.cached, found.latency_ms, found.error, forced)
        out.trace.searches.append(record)
        block = protocol.format_result(
            found.passages, max_chars=opts.passage_chars, error="search unavailable" if found.error else None
        )
        out.inserted(block)
        yield SearchResult(record, index, block)


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
