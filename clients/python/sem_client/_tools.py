"""Client-side search through tool calls: the model decides, your function searches (`answer_with`).

The service ends a completion at the model's search with a tool call; the helper runs `search_fn` on the query,
sends the conversation back with the result as a `role: "tool"` message, and repeats until the model answers. The
server's search budget (`max_searches`) bounds the rounds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sem_client.errors import SemError
from sem_client.types import ChatCompletion

SEARCH_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search for passages that answer a query.",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
    },
}
MAX_ROUNDS = 8  # a guard against a server that never stops asking; its budget ends the rounds long before


def search_text(found: str | Sequence[Any]) -> str:
    """A search function's result as the tool message's text: a string as it is, a list as numbered passages
    (strings, or dicts / objects with `title` and `text`).

    >>> print(search_text(["Hamlet is a play.", {"title": "Hamlet", "text": "By Shakespeare."}]))
    [1] Hamlet is a play.
    [2] Hamlet: By Shakespeare.
    """
    if isinstance(found, str):
        return found
    lines = []
    for i, item in enumerate(found, start=1):
        if isinstance(item, str):
            lines.append(f"[{i}] {item}")
            continue
        title = item.get("title", "") if isinstance(item, dict) else getattr(item, "title", "")
        text = item.get("text", "") if isinstance(item, dict) else getattr(item, "text", str(item))
        lines.append(f"[{i}] {title}: {text}" if title else f"[{i}] {text}")
    return "\n".join(lines) or "No results."


def pending_call(completion: ChatCompletion) -> tuple[dict[str, Any], str, str] | None:
    """(the assistant message to send back, the call's id, the query) when the completion ends at a search."""
    choice = completion.choices[0]
    calls = choice.message.tool_calls or []
    if choice.finish_reason != "tool_calls" or not calls:
        return None
    call = calls[0]
    query = json.loads(call.function.arguments).get("query", "")
    # the reasoning goes back too: the service replays the model's turn as it wrote it
    assistant = {"role": "assistant", "content": choice.message.content,
                 "tool_calls": [call.model_dump(include={"id", "type", "function"})],
                 "reasoning_content": choice.message.reasoning_content}  # fmt: skip
    return assistant, call.id, query


def tool_message(call_id: str, found: str | Sequence[Any]) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": search_text(found)}


def too_many_rounds() -> SemError:
    return SemError(f"the service asked for more than {MAX_ROUNDS} searches; set max_searches lower")
