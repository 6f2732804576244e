"""How sure the model was of its first answer: the probability of the least likely token of its answer span
(`answer_confidence`), one scale for tagged and untagged answers. The `confidence` gate thresholds it; the confidence
note writes it into the context."""

from __future__ import annotations

import math
import re

from sem import protocol


def tokens_to_spell(tokenizer: object, ids: list[int], chars: int) -> int:
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
    start = tokens_to_spell(tokenizer, ids, start_char)
    decode = tokenizer.decode  # type: ignore[attr-defined]
    if start and len(decode(ids[:start], skip_special_tokens=True)) > start_char:
        start -= 1  # that token also holds the span's first characters
    return start, max(tokens_to_spell(tokenizer, ids, end_char), start + 1)
