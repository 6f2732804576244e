"""The model's own turn before a search it handed to the client, kept by the tool call's id.

A client that runs SEM's search itself sends back the model's answer and the call; whether it also sends back
`reasoning_content` (openai-python's `message.model_dump()` does; LangChain and the OpenAI Agents SDK do not) decides
whether the next request can replay the turn as the model wrote it, think included. Rebuilt from the answer alone,
the 135M default model copies its first answer after the tool's result instead of reading it (issue #43). So the
service keeps each handed-over turn for a while under the call's id, which every client echoes: in Redis when the
service has one (replicas share it), else in the process. A turn it cannot find (expired, another replica without
Redis, Redis down) is rebuilt from the answer, as before: the answer degrades, the request never fails.
"""

from __future__ import annotations

import dataclasses
import logging

from sem import protocol
from sem.cache_stores import CacheStore, CacheUnavailable
from sem.trace import ClientSearch, Trace

log = logging.getLogger(__name__)
KEY = "sem:turn:"


def call_id_of(request_id: str) -> str:
    """The tool call id of the search a request handed over, derived from the request's id (so the id the client
    gets and the id the turn is kept under are one)."""
    return "call_" + request_id.rsplit("-", 1)[-1][:24]


class TurnMemory:
    """Turns kept by call id for `ttl_s` seconds on `store`."""

    def __init__(self, store: CacheStore, ttl_s: float) -> None:
        self.store = store
        self.ttl_s = ttl_s

    async def remember(self, trace: Trace) -> None:
        """Keep the turn of a trace that ended at a search for the client (any other trace: nothing)."""
        if trace.pending_search is None or self.ttl_s <= 0:
            return
        turn = protocol.search_turn(trace.completion, trace.pending_search)
        if turn is None:
            return
        try:
            await self.store.set(KEY + call_id_of(trace.request_id), turn.encode(), self.ttl_s)
        except CacheUnavailable as exc:
            log.warning("the search turn of %s was not kept (%s): its next round is rebuilt from the answer",
                        trace.request_id, exc)  # fmt: skip

    async def recall(self, rounds: list[ClientSearch]) -> list[ClientSearch]:
        """The rounds with the kept turn filled in where the client did not send one back."""
        filled = []
        for done in rounds:
            if done.turn is None and done.call_id:
                try:
                    kept = await self.store.get(KEY + done.call_id)
                except CacheUnavailable:
                    kept = None
                if kept is not None:
                    done = dataclasses.replace(done, turn=protocol.search_turn(kept.decode(), done.query))
            filled.append(done)
        return filled

    async def aclose(self) -> None:
        await self.store.aclose()
