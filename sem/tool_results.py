"""A client's search result (an OpenAI tool message's text) read back into passages, so the model reads it in the
same `[1] title: text` shape as the service's own results (`sem.protocol.format_result`) and answers can cite it.

Agents send their search results as JSON (a list of hits, or `{"results": [...]}` with `title`, `text` /
`content` / `snippet`, `url` / `link`), as numbered lines (`[1] ...`, what SEM's SDK writes), or as plain text
(one passage). Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sem.types import Passage

_NUMBERED = re.compile(r"^\s*\[(\d+)\]\s*", re.MULTILINE)
_TEXT_KEYS = ("text", "content", "snippet", "body", "description")
_URL_KEYS = ("url", "link", "href")
_TITLE_MAX = 120  # "[1] Title: text": a longer head is the passage's own sentence, not a title


def tool_passages(text: str, call_id: str = "") -> list[Passage]:
    """The passages of a tool's text; ids are the hit's url, else `tool:{call_id}:{n}`.

    >>> [(p.title, p.text) for p in tool_passages("[1] Hamlet: A play.\\n[2] By Shakespeare.")]
    [('Hamlet', 'A play.'), ('', 'By Shakespeare.')]
    >>> p, = tool_passages('[{"title": "Q", "content": "Founded in 1931.", "url": "https://q.example"}]')
    >>> (p.id, p.title, p.text)
    ('https://q.example', 'Q', 'Founded in 1931.')
    >>> [p.text for p in tool_passages("Quorvane was founded by Ilsa Brandt in 1931.", "call_1")]
    ['Quorvane was founded by Ilsa Brandt in 1931.']
    >>> [p.text for p in tool_passages('{"answer": "Ilsa Brandt"}')]
    ['{"answer": "Ilsa Brandt"}']
    """
    body = text.strip()
    hits = _json_hits(body)
    passages = [_from_hit(hit, f"tool:{call_id}:{n}") for n, hit in enumerate(hits or [], start=1)]
    if any(p.text for p in passages):
        return [p for p in passages if p.text]
    # JSON of another shape ({"answer": ...}) is kept whole, as plain text: nothing the client sent is dropped
    if _NUMBERED.match(body):
        chunks = [c.strip() for c in _NUMBERED.split(body)[2::2]]  # split -> ["", "1", chunk, "2", chunk, ...]
        return [_titled(chunk, f"tool:{call_id}:{n}") for n, chunk in enumerate(chunks, start=1) if chunk]
    return [Passage(id=f"tool:{call_id}:1", text=body)] if body else []


def _json_hits(body: str) -> list[Any] | None:
    if not body.startswith(("[", "{")):
        return None
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict):
        data = next((data[k] for k in ("results", "hits", "items", "data") if isinstance(data.get(k), list)), [data])
    if not isinstance(data, list) or not all(isinstance(hit, dict | str) for hit in data):
        return None
    return data


def _from_hit(hit: dict[str, Any] | str, default_id: str) -> Passage:
    if isinstance(hit, str):
        return Passage(id=default_id, text=hit.strip())
    text = next((str(hit[k]) for k in _TEXT_KEYS if hit.get(k)), "")
    url = next((str(hit[k]) for k in _URL_KEYS if hit.get(k)), None)
    return Passage(id=url or default_id, title=str(hit.get("title") or hit.get("name") or ""), text=text.strip())


def _titled(chunk: str, passage_id: str) -> Passage:
    """`Title: text` (format_result's shape) split in two; anything else is all text."""
    head, sep, rest = chunk.partition(": ")
    if sep and rest and len(head) <= _TITLE_MAX and not re.search(r"[.!?]\s", head):
        return Passage(id=passage_id, title=head, text=rest)
    return Passage(id=passage_id, text=chunk)
