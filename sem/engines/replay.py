"""An engine that replays scripted replies: the teacher that writes SFT traces through the real loop, and the
deterministic driver of the loop's unit tests.

Each `generate` call takes the next reply, cuts it after the first stop string (kept, as the real engines keep
it) or at `max_tokens`, and ends it with EOS otherwise. An exhausted script answers with an immediate EOS.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from sem.engines.base import Delta, SamplingOptions, first_stop


class ReplayEngine:
    name = "replay"

    def __init__(self, tokenizer: Any, replies: list[str], model_name: str = "replay", logprob: float = 0.0) -> None:
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.replies = list(replies)
        self.logprob = logprob  # every token's log-probability, when asked for
        self.contexts: list[str] = []  # what each call was given, decoded (tests read it)

    async def generate(
        self, prompt_ids: list[int], options: SamplingOptions, *, request_id: str
    ) -> AsyncIterator[Delta]:
        self.contexts.append(self.tokenizer.decode(prompt_ids))
        reply = self.replies.pop(0) if self.replies else ""
        stop, cut = first_stop(reply, options.stop)
        text = reply[:cut]
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        finish = "stop"
        if len(ids) > options.max_tokens:
            ids, finish, stop = ids[: options.max_tokens], "length", None
            text = self.tokenizer.decode(ids)
        elif stop is None and self.tokenizer.eos_token_id is not None:
            ids = [*ids, self.tokenizer.eos_token_id]  # the reply ended: the model stops
        logprobs = [self.logprob] * len(ids) if options.logprobs else None
        top = [{i: self.logprob} for i in ids] if options.top_logprobs else None  # the scripted token alone
        # Two pieces, as a streaming engine sends many.
        half = len(ids) // 2
        head = self.tokenizer.decode(ids[:half], skip_special_tokens=True)
        yield Delta(head, ids[:half], logprobs[:half] if logprobs else None, top_logprobs=top[:half] if top else None)
        yield Delta(text[len(head) :], ids[half:], logprobs[half:] if logprobs else None, finish, stop,
                    top[half:] if top else None)  # fmt: skip

    async def abort(self, request_id: str) -> None:
        return None

    async def check_health(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
