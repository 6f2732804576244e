"""Reading one engine request as it streams: `AnswerGate` holds back what follows a closed answer until it is a
search call or cannot be, `TurnCollector` gathers the request's text, token ids and log-probs."""

from __future__ import annotations

from sem import protocol
from sem.confidence import tokens_to_spell
from sem.engines.base import Delta


def may_open_search(text: str) -> bool:
    """Whether text the model wrote after an answer (or its note) opens a search call or still can.

    >>> may_open_search(" <sea"), may_open_search(" <search> q"), may_open_search(" <answer>")
    (True, True, False)
    """
    head = text.lstrip()
    return head.startswith(protocol.SEARCH_OPEN) or protocol.SEARCH_OPEN.startswith(head)


class AnswerGate:
    """Reads one engine request's text as it streams and holds back what follows a closed `</answer>` until that
    text opens `<search>` (the model's search call: shown) or cannot (the answer stands: cut at `end`).

    >>> gate = AnswerGate()
    >>> gate.feed("<answer>Paris</answer>"), gate.feed(" <sea"), gate.answer_stands
    ('<answer>Paris</answer>', '', False)
    >>> gate.feed("rch> q"), gate.answer_stands
    (' <search> q', False)
    >>> gate = AnswerGate()
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
            head = self.text[after:]
            if not may_open_search(head):
                self.answer_stands, self.end, show_to = True, after, after
            elif not head.lstrip().startswith(protocol.SEARCH_OPEN):  # nothing yet, or a prefix of <search>: wait
                show_to = after
        return self._show(show_to)

    def flush(self) -> str:
        """What was held back, once the request ended on its own (EOS, length)."""
        return self._show(len(self.text))

    def _show(self, upto: int) -> str:
        shown, self.shown = self.text[self.shown : upto], max(self.shown, upto)
        return shown


class TurnCollector:
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
        lo = tokens_to_spell(tokenizer, self.token_ids, chars)
        self.text, self.token_ids = self.text[:chars], self.token_ids[:lo]
        if self.logprobs is not None:
            self.logprobs = self.logprobs[:lo]
        self.finish_reason, self.stop = "stop", protocol.ANSWER_CLOSE
