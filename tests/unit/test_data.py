"""Data loaders on the real benchmark files (skipped where ../shared/data is absent) and on files the tests write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sem import benchmarks
from trainer import data
from trainer.data import KNOWN, NEEDS_SEARCH, Example, Paragraph

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
real = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not beside the checkout")


@real
@pytest.mark.parametrize(("name", "split"), [(s, sp) for s, sp in benchmarks._FILES] + [("mmlu", "dev")])
def test_every_source_loads(name: str, split: str) -> None:
    rows = data.load_source(name, DATA, split, limit=50)
    assert rows and all(r.question and r.answers and all(r.answers) for r in rows)
    assert len({r.id for r in rows}) == len(rows)


@real
def test_musique_and_hotpotqa_keep_their_supporting_paragraphs() -> None:
    musique = data.load_source("musique", DATA, "dev")
    assert 100 <= len(musique) <= 150 and all(r.kind == NEEDS_SEARCH for r in musique)
    assert all(any(p.supporting for p in r.paragraphs) for r in musique)
    hotpot = data.load_source("hotpotqa", DATA, "dev")
    assert all(sum(p.supporting for p in r.paragraphs) >= 2 for r in hotpot)


@real
def test_mmlu_and_gsm8k_are_known() -> None:
    mmlu = data.load_source("mmlu", DATA, "dev", limit=20)
    assert all(r.kind == KNOWN and r.answers[0] in "ABCD" and len(r.choices or ()) == 4 for r in mmlu)
    assert "A. " in mmlu[0].prompt_text() and "letter" in mmlu[0].prompt_text()
    gsm = data.load_source("gsm8k", DATA, "train", limit=20)
    assert all(r.answers[0].lstrip("-").replace(".", "").isdigit() for r in gsm)


def test_unknown_source_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        data.load_source("squad", DATA)
    with pytest.raises(FileNotFoundError):
        data.load_source("musique", Path("/nonexistent"), "dev")


def test_loaders_on_written_files(tmp_path: Path) -> None:
    musique = tmp_path / "m.jsonl"
    musique.write_text(
        json.dumps({"id": "m1", "question": "Q?", "answer": "A", "answer_aliases": ["Alias"], "answerable": True,
                    "paragraphs": [{"idx": 0, "title": "T", "paragraph_text": "text", "is_supporting": True}]})
        + "\n" + json.dumps({"id": "m2", "question": "Q2?", "answer": "B", "answerable": False}) + "\n"
    )  # fmt: skip
    (m,) = data.load_musique(musique)
    assert m.answers == ("A", "Alias") and m.paragraphs == (Paragraph("T", "text", True),)
    hotpot = tmp_path / "h.json"
    context = [["T1", ["a.", "b."]], ["T2", ["c."]]]
    row = {"_id": "h1", "question": "Q?", "answer": "yes", "supporting_facts": [["T1", 0]], "context": context}
    hotpot.write_text(json.dumps([row]))
    (h,) = data.load_hotpotqa(hotpot)
    assert [p.supporting for p in h.paragraphs] == [True, False] and h.paragraphs[0].text == "a. b."
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "x_val.csv").write_text('"What, then?",w,x,y,z,c\n')
    (q,) = data.load_mmlu(tmp_path, "val")
    assert q.question == "What, then?" and q.answers == ("C",) and q.choices == ("w", "x", "y", "z")
    gsm = tmp_path / "g.jsonl"
    gsm.write_text(json.dumps({"question": "How many?", "answer": "so 1,234\n#### 1,234"}) + "\n")
    assert data.load_gsm8k(gsm)[0].answers == ("1234",)
    nq = tmp_path / "n.jsonl"
    nq.write_text(json.dumps({"question": "who?", "answer": ["x", "y"]}) + "\n")
    assert data.load_nq_open(nq)[0].answers == ("x", "y")


def make(i: int, kind: str) -> Example:
    return Example(f"{kind}-{i}", f"q{i}", ("a",), kind, "test", paragraphs=(Paragraph("T", f"p{i % 3}"),))


def test_balanced_mix_is_balanced_and_deterministic() -> None:
    needs, known = [make(i, NEEDS_SEARCH) for i in range(10)], [make(i, KNOWN) for i in range(20)]
    mix = data.balanced_mix(needs, known, 5, seed=3)
    assert data.class_balance(mix) == {KNOWN: 5, NEEDS_SEARCH: 5}
    assert mix == data.balanced_mix(needs, known, 5, seed=3) != data.balanced_mix(needs, known, 5, seed=4)
    with pytest.raises(ValueError, match="only 10 needs_search"):
        data.balanced_mix(needs, known, 11)


def test_label_by_pass_rate() -> None:
    examples = [make(0, KNOWN), make(1, KNOWN)]
    answers = {"q0": ["a", "b"], "q1": ["b", "b"]}
    labelled = data.label_by_pass_rate(
        examples, lambda ex, k: answers[ex.question][:k], k=2, is_correct=lambda ans, ex: ans in ex.answers
    )
    assert [e.kind for e in labelled] == [KNOWN, NEEDS_SEARCH]


def test_paragraph_corpus_dedups_and_jsonl_round_trips(tmp_path: Path) -> None:
    examples = [make(i, NEEDS_SEARCH) for i in range(6)]
    corpus = data.paragraph_corpus(examples)
    assert sorted(r["text"] for r in corpus) == ["p0", "p1", "p2"]
    assert all(r["id"].startswith("para:") for r in corpus)
    mc = Example("x", "q", ("B",), KNOWN, "mmlu", choices=("1", "2", "3", "4"))
    data.write_jsonl([*examples, mc], tmp_path / "e.jsonl")
    assert data.read_jsonl(tmp_path / "e.jsonl") == [*examples, mc]
