"""One request made ready to run, for every API (`/v1/answer`, chat completions, the Responses API): the served
model it names, the loop's options from that model's defaults and the request's fields, the source filter and the
search budget (`service.budget`), the search-rate dial (`service.rate`). Each API maps its own fields; this is the
one path from them to the loop."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request

from sem.loop import LoopOptions
from service.budget import prepare_search
from service.models import ServedModel
from service.protocol import SearchDomains
from service.rate import apply_search_rate

if TYPE_CHECKING:
    from service.state import ServiceState


@dataclass(frozen=True, slots=True)
class SearchAsked:
    """What a request asks of search beyond the loop's fields, and where each was written (for a 4xx's `param`)."""

    mode: str | None = None
    domains: SearchDomains | None = None
    rate: float | None = None
    prefix: str = ""  # "sem." for the OpenAI APIs' extension field


@dataclass(slots=True)
class Prepared:
    model: ServedModel
    options: LoopOptions
    dialled: bool  # the threshold came from the search-rate dial (counted for the rate achieved)


async def prepare(state: ServiceState, request: Request, model_name: str | None, fields: Mapping[str, Any],
                  asked: SearchAsked) -> Prepared:  # fmt: skip
    """`fields`: LoopOptions' fields as the request set them (None: the served model's default)."""
    model = state.served(model_name)
    state.check_search_mode(asked.mode, param=f"{asked.prefix}search_mode", search=model.search)
    options = LoopOptions.from_defaults(model.defaults, max_prompt_tokens=state.settings.limits.max_prompt_tokens,
                                        **fields)  # fmt: skip
    await prepare_search(state, request, options, asked.domains, param=f"{asked.prefix}search_domains")
    dialled = await apply_search_rate(state, model, options, asked.rate)
    return Prepared(model, options, dialled)
