"""The Engine contract: token ids in, streamed text and token ids out, with stop strings kept in the text."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

MIN_TEMPERATURE = 1e-3


@dataclass(slots=True)
class SamplingOptions:
    """How to sample one generation call."""

    max_tokens: int
    # Stop strings and EOS are ignored until this many tokens are out (vLLM's `min_tokens`).
    min_tokens: int = 0
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: bool = False  # return the sampled tokens' log-probabilities (training rollouts)
    # also return the k most likely tokens' log-probabilities at each position (the decision's P(end of turn))
    top_logprobs: int = 0
    suppress_token_ids: list[int] = field(default_factory=list)  # never sample these
    adapter: str | None = None  # a served LoRA adapter's name (`SEM_ADAPTERS`); None: the engine's own model

    def __post_init__(self) -> None:
        # Logits divided by a near-zero temperature overflow to inf and break sampling: that is greedy decoding.
        if self.temperature < MIN_TEMPERATURE:
            self.temperature = 0.0


@dataclass(slots=True)
class Delta:
    """A piece of a generation. The last one has `finish_reason` set.

    `finish_reason` is "stop" (EOS or a stop string: then `stop` names it and the text ends with it),
    "length" (max_tokens reached) or "abort".
    """

    text: str
    token_ids: list[int]
    logprobs: list[float] | None = None
    finish_reason: str | None = None
    stop: str | None = None
    # with `top_logprobs`: per token, the most likely tokens' log-probabilities (token id -> logprob); None where
    # the engine cannot tell
    top_logprobs: list[dict[int, float]] | None = None


@runtime_checkable
class Engine(Protocol):
    """A text generator the search loop drives. Implementations: `vllm`, `hf`."""

    name: str
    model_name: str
    tokenizer: Any  # a Hugging Face tokenizer (chat template, encode, decode)

    def generate(self, prompt_ids: list[int], options: SamplingOptions, *, request_id: str) -> AsyncIterator[Delta]: ...

    async def abort(self, request_id: str) -> None: ...

    async def check_health(self) -> None: ...

    async def aclose(self) -> None: ...


def first_stop(text: str, stops: list[str]) -> tuple[str | None, int]:
    """The earliest stop string in the text and where the text should end (just after it).

    >>> first_stop("<answer>x</answer> <search>", ["<search>", "</answer>"])
    ('</answer>', 18)
    >>> first_stop("no stop here", ["</answer>"])
    (None, 12)
    """
    best: tuple[str | None, int] = (None, len(text))
    best_at = len(text) + 1
    for stop in stops:
        at = text.find(stop) if stop else -1
        if 0 <= at < best_at:
            best, best_at = (stop, at + len(stop)), at
    return best
