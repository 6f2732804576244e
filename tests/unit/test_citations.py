"""Citations (sem.citations) and their two wire forms: /v1/answer's `citations`, chat's `url_citation` annotations."""

from __future__ import annotations

import pytest

from sem.citations import Judge, cite, support
from sem.loop import SearchRecord, Trace
from sem.types import Passage
from service.openai.serving import annotations_of
from service.traces import citations_of

FACT = Passage(id="tool:call_1:1", title="Quorvane", text="Quorvane was founded by Ilsa Brandt in 1931.")
WEB = Passage(id="https://example.org/quorvane", title="Quorvane lamps", text="Quorvane makes lamps. Brandt, Ilsa.")
OTHER = Passage(id="p9", title="Lutz", text="The capital of Zubrowka is Lutz.")


@pytest.mark.parametrize(
    ("answer", "text", "judge", "quote"),
    [
        ("Ilsa Brandt", FACT.text, Judge.contains, "Ilsa Brandt"),
        ("ILSA brandt!", FACT.text, Judge.contains, "Ilsa Brandt"),  # case and punctuation aside
        ("The Ilsa Brandt", FACT.text, Judge.contains, "Ilsa Brandt"),  # articles aside, as SQuAD's normalisation
        ("Brandt, Ilsa", FACT.text, Judge.contains, None),  # not one run
        ("Quorvane's founder was Ilsa Brandt.", FACT.text, Judge.overlap, FACT.text),  # a sentence: its words
        ("Quorvane's founder was Ilsa Brandt.", FACT.text, Judge.contains, None),
        ("Ilsa", "Ilsabeth", Judge.contains, None),  # whole words only
        ("1931", FACT.text, Judge.overlap, "1931"),
    ],
)
def test_support(answer: str, text: str, judge: Judge, quote: str | None) -> None:
    span = support(answer, text, judge)
    assert (text[span[0] : span[1]] if span else None) == quote


def test_cite_names_each_supporting_passage_once_with_its_url() -> None:
    found = cite("Ilsa Brandt", [[FACT, OTHER], [WEB, FACT]])
    assert [(c.passage_id, c.search, c.rank, c.url) for c in found] == [
        ("tool:call_1:1", 0, 1, None),
        ("https://example.org/quorvane", 1, 1, "https://example.org/quorvane"),  # overlap: both words are there
    ]
    assert all((c.start, c.end) == (0, len("Ilsa Brandt")) for c in found)
    assert cite("unknown", [[FACT]]) == [] and cite("", [[FACT]]) == []


def test_cite_judges_the_text_the_model_read() -> None:
    assert cite("1931", [[FACT]], max_chars=20) == []  # the year is past the cut
    assert cite("Quorvane", [[FACT]], max_chars=20)


def trace(*passages: Passage, pending: str | None = None) -> Trace:
    t = Trace("r", "p", [], searches=[SearchRecord("q", list(passages), cached=False, latency_ms=0.0)])
    t.pending_search = pending
    return t


def test_annotations_are_openais_url_citations() -> None:
    (note,) = annotations_of(trace(OTHER, FACT), "Ilsa Brandt")
    dumped = note.model_dump()
    cited = {"start_index": 0, "end_index": 11, "url": "tool:call_1:1", "title": "Quorvane"}  # titled
    assert dumped == {"type": "url_citation", "url_citation": cited}
    from openai.types.chat.chat_completion_message import Annotation  # the client's own type reads it

    assert Annotation.model_validate(dumped).url_citation.title == "Quorvane"


def test_no_citations_without_a_final_answer_or_a_search() -> None:
    assert annotations_of(trace(FACT), "nothing here") is None
    assert citations_of(trace(FACT, pending="next query"), "Ilsa Brandt") == []  # a tool call: not final yet
    assert citations_of(Trace("r", "p", []), "Ilsa Brandt") == []
