"""Which inserted passages support an answer: the citations of `/v1/answer` and chat's `url_citation` annotations.

A passage supports the answer when it holds the answer's words (`support`): the answer's tokens appear in it as one
run (`contains`), or, for an answer written as a sentence, at least half of its content words do (`overlap`, which
SEM uses: on the gate runs' answers whose search held the gold it had the same precision as `contains` against the
passages holding the gold, 0.52, and three times its recall, 0.43 vs 0.13; bench/citations.py, BENCHMARKS.md).
Only passages the model read are judged, cut as they were inserted (`passage_chars`), each passage cited once.
Pure functions, no I/O.

>>> from sem.types import Passage
>>> found = [Passage(id="p1", title="Zubrowka", text="Its capital is Lutz, founded in 1802."),
...          Passage(id="https://ex.org/a", title="Elsewhere", text="Nothing about it.")]
>>> [(c.passage_id, c.quote) for c in cite("Lutz", [found])]
[('p1', 'Lutz')]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from sem.types import Passage

_WORD = re.compile(r"\w+", re.UNICODE)
_ARTICLES = frozenset(("a", "an", "the"))
_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")
# Words that say nothing about which passage an answer came from (articles dropped as SQuAD's normalisation does).
_STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        "a an the of in on at to for and or is was are were be been by with as from that this it its his her their "
        "he she they i you we what which who when where how not no yes unknown",
    )
)


class Judge(StrEnum):
    contains = "contains"  # the answer's tokens, in order, as one run in the passage
    overlap = "overlap"  # at least OVERLAP of the answer's content words are in the passage


OVERLAP = 0.5  # bench/citations.py: the share of content words the `overlap` judge asks for


@dataclass(frozen=True, slots=True)
class Citation:
    """One passage that supports the answer: which (search, rank, id), and where.

    `start`/`end`: the span of the answer it supports (characters of the answer); `quote_start`/`quote_end`: the
    span of the passage's text that holds it (what a reader highlights)."""

    passage_id: str
    title: str
    url: str | None
    search: int  # index of the search in the trace
    rank: int  # the passage's [n] in that search's result block
    start: int
    end: int
    quote_start: int
    quote_end: int
    quote: str


def url_of(passage: Passage) -> str | None:
    """The passage's URL, when its backend has one (the web backends use it as the id)."""
    return passage.id if passage.id.startswith(("http://", "https://")) else None


def cite(
    answer: str,
    searches: Iterable[Sequence[Passage]],
    *,
    judge: Judge = Judge.overlap,
    max_chars: int | None = None,
) -> list[Citation]:
    """The passages (of each search, in order) that support `answer`, each once; none for an empty answer."""
    if not content_words(answer):
        return []  # "unknown", "it", "": nothing a passage could be cited for
    citations: list[Citation] = []
    seen: set[str] = set()
    for s, passages in enumerate(searches):
        for rank, passage in enumerate(passages, start=1):
            text = passage.text[:max_chars] if max_chars else passage.text
            span = support(answer, text, judge)
            if span is None or passage.id in seen:
                continue
            seen.add(passage.id)
            citations.append(Citation(passage.id, passage.title, url_of(passage), s, rank, 0, len(answer),
                                      span[0], span[1], text[span[0] : span[1]]))  # fmt: skip
    return citations


def support(answer: str, text: str, judge: Judge = Judge.contains) -> tuple[int, int] | None:
    """The span of `text` that supports `answer` under `judge`, or None.

    >>> t = "Quorvane was founded by Ilsa Brandt in 1931. It makes lamps."
    >>> support("Ilsa Brandt", t), support("ilsa  BRANDT!", t), support("Brandt, Ilsa", t)
    ((24, 35), (24, 35), None)
    >>> support("the lord of rings", "The Lord of the Rings")
    (4, 21)
    >>> support("It was founded by Ilsa Brandt.", t, Judge.overlap)
    (0, 44)
    """
    wanted = [w for w in _words(answer) if w not in _ARTICLES]
    if not wanted:
        return None
    found = [m for m in _WORD.finditer(text) if m.group().lower() not in _ARTICLES]  # as SQuAD's normalisation
    words = [m.group().lower() for m in found]
    for i in range(len(words) - len(wanted) + 1):
        if words[i : i + len(wanted)] == wanted:
            return found[i].start(), found[i + len(wanted) - 1].end()
    if judge is Judge.contains:
        return None
    content = set(content_words(answer))
    if not content or len(content & set(words)) < OVERLAP * len(content):
        return None
    # the sentence that holds most of the answer's content words is the quote
    best = max(_SENTENCE.finditer(text), key=lambda m: len(content & set(_words(m.group()))))
    lead = len(best.group()) - len(best.group().lstrip())
    return best.start() + lead, best.end()


def content_words(text: str) -> list[str]:
    return [w for w in _words(text) if w not in _STOPWORDS]


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]
