"""One chat request made ready to run, for both OpenAI APIs (chat completions, and the Responses API read as chat):
its conversation, then `service.prepare` (the served model, the loop's options, budget, filter and rate), and the
rounds the client ran with the turns the service kept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from fastapi import Request

from sem.loop import Event, LoopOptions, Trace, check_prompt_length
from service.models import ServedModel
from service.openai.protocol import ChatCompletionRequest
from service.openai.serving import Conversation, check_request, loop_fields
from service.prepare import SearchAsked, prepare

if TYPE_CHECKING:
    from service.state import ServiceState


@dataclass(slots=True)
class PreparedChat:
    chat: Conversation
    model: ServedModel
    options: LoopOptions
    dialled: bool  # the threshold came from the search-rate dial
    given: dict[str, Any]  # the loop's keyword arguments: history, request id, client rounds

    async def run(self, state: ServiceState, api: str, request: Request) -> Trace:
        work = partial(self.model.loop.run, self.chat.question, self.options, **self.given)
        return await state.runner.run(api, self.options.policy.value, work, request, dialled=self.dialled,
                                      model=self.model.name)  # fmt: skip

    def stream(self, state: ServiceState, api: str, max_prompt_tokens: int | None) -> AsyncIterator[Event]:
        # the loop enforces the prompt cap too, but a stream has sent its 200 by then: check it up front
        check_prompt_length(self.model.loop.prompt_tokens(self.chat.question, self.chat.history), max_prompt_tokens)
        events = self.model.loop.stream(self.chat.question, self.options, **self.given)
        return state.runner.stream(api, self.options.policy.value, events, dialled=self.dialled, model=self.model.name)


async def prepare_chat(body: ChatCompletionRequest, state: ServiceState, request: Request,
                       request_id: str) -> PreparedChat:  # fmt: skip
    chat = check_request(body, state)
    sem = body.sem
    asked = SearchAsked(mode=sem.search_mode, domains=sem.search_domains, rate=sem.search_rate, prefix="sem.")
    ready = await prepare(state, request, body.model, loop_fields(body, chat), asked)
    rounds = await state.turns.recall(chat.rounds)  # the turns the client did not send back, as kept
    given = {"history": chat.history, "request_id": request_id, "client_searches": rounds}
    return PreparedChat(chat, ready.model, ready.options, ready.dialled, given)
