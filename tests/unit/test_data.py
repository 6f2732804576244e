"""Data loaders on the benchmark sample shipped in the package (the original file layouts), on a local dataset
folder in the Hugging Face layout (through `datasets.load_dataset`), and on files the tests write; split checks."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from sem.evaldata import benchmarks
from sem.evaldata.sample import SAMPLE_DIR
from sem.loop import LoopOptions
from trainer import data
from trainer.data import KNOWN, NEEDS_SEARCH, Example, Paragraph

SHIPPED = [(s, sp) for s, sp in benchmarks._FILES if s != "triviaqa"]  # TriviaQA's licence is not stated


@pytest.mark.parametrize(("name", "split"), [*SHIPPED, ("mmlu", "dev")])
def test_every_shipped_source_loads(name: str, split: str) -> None:
    rows = data.load_source(name, "sample", split, limit=50)
    assert len(rows) == 50 and all(r.question and r.answers and all(r.answers) for r in rows)
    assert len({r.id for r in rows}) == len(rows)


def test_the_sample_is_a_folder_in_the_original_layout_with_its_notice() -> None:
    for name, split in SHIPPED:
        assert data.load_source(name, SAMPLE_DIR, split, limit=5) == data.load_source(name, "sample", split, limit=5)
    notice = (SAMPLE_DIR / "NOTICE.md").read_text()
    assert all(licence in notice for licence in ("CC BY 4.0", "CC BY-SA 4.0", "CC BY-SA 3.0", "Apache-2.0", "MIT"))
    assert not (SAMPLE_DIR / "triviaqa").exists()
    with pytest.raises(FileNotFoundError, match="TriviaQA is not in the shipped sample"):
        data.load_source("triviaqa", "sample", "dev")


def test_musique_and_hotpotqa_keep_their_supporting_paragraphs() -> None:
    musique = data.load_source("musique", "sample", "dev")
    assert 100 <= len(musique) <= 150 and all(r.kind == NEEDS_SEARCH for r in musique)
    assert all(any(p.supporting for p in r.paragraphs) for r in musique)
    hotpot = data.load_source("hotpotqa", "sample", "dev")
    assert all(sum(p.supporting for p in r.paragraphs) >= 2 for r in hotpot)


def test_mmlu_and_gsm8k_are_known() -> None:
    mmlu = data.load_source("mmlu", "sample", "dev", limit=20)
    assert all(r.kind == KNOWN and r.answers[0] in "ABCD" and len(r.choices or ()) == 4 for r in mmlu)
    assert "A. " in mmlu[0].prompt_text() and "letter" in mmlu[0].prompt_text()
    gsm = data.load_source("gsm8k", "sample", "train", limit=20)
    assert all(r.answers[0].lstrip("-").replace(".", "").isdigit() for r in gsm)


def hub_folder(root: Path, split: str, rows: list[dict]) -> str:
    """A dataset folder in the hub's layout (`<split>.jsonl`), which `datasets.load_dataset` reads offline."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f"hf:{root}"


def test_hub_layouts_load_through_datasets_like_the_original_files(tmp_path: Path) -> None:
    raw = json.loads((SAMPLE_DIR / "hotpotqa/hotpot_dev_distractor_v1.sample150.json").read_text())[:5]
    as_on_hub = [  # hotpotqa/hotpot_qa (distractor): lists of pairs become dicts of lists
        {"id": r["_id"], "question": r["question"], "answer": r["answer"],
         "supporting_facts": {"title": [t for t, _ in r["supporting_facts"]],
                              "sent_id": [i for _, i in r["supporting_facts"]]},
         "context": {"title": [t for t, _ in r["context"]], "sentences": [s for _, s in r["context"]]}}
        for r in raw
    ]  # fmt: skip
    from_hub = data.load_source("hotpotqa", hub_folder(tmp_path / "hotpot", "validation", as_on_hub), "dev")
    assert from_hub == data.load_source("hotpotqa", "sample", "dev", limit=5)

    mmlu = [{"question": "2+2?", "subject": "math", "choices": ["3", "4", "5", "6"], "answer": 1}]
    (q,) = data.load_source("mmlu", hub_folder(tmp_path / "mmlu", "test", mmlu), "test")
    assert (q.answers, q.choices, q.id) == (("B",), ("3", "4", "5", "6"), "mmlu/test/0")
    trivia = [{"question": "Q?", "question_id": "tq1", "answer": {"value": "Paris", "aliases": ["Paris", "Paree"]}}]
    (t,) = data.load_source("triviaqa", hub_folder(tmp_path / "trivia", "validation", trivia), "dev")
    assert (t.id, t.answers, t.source) == ("tq1", ("Paris", "Paree"), "triviaqa")
    gsm = [{"question": "How many?", "answer": "so\n#### 1,234"}]
    (g,) = data.load_source("gsm8k", hub_folder(tmp_path / "gsm", "train", gsm), "train")
    assert (g.answers, g.id) == (("1234",), "gsm8k/train/0")


def test_hub_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="splits"):
        data.load_source("gsm8k", "hf", "dev")
    with pytest.raises(RuntimeError, match="use `sample` or a folder"):
        data.load_source("nq_open", f"hf:{tmp_path / 'empty'}", "dev")


def test_split_keys_are_normalised_question_text() -> None:
    a = Example("id-1", "Who wrote Hamlet?", ("x",), NEEDS_SEARCH, "t")
    b = Example("id-2", "who wrote  the hamlet", ("x",), NEEDS_SEARCH, "u")  # another id, the same question
    assert data.question_key(a) == data.question_key(b)
    with pytest.raises(ValueError, match="train and test share 1 questions"):
        data.check_disjoint(train=[a], dev=[make(1, KNOWN)], test=[b])
    assert data.drop_overlaps([b, make(2, KNOWN)], [a]) == [make(2, KNOWN)]
    rows = data.load_source("musique", "sample", "dev") + data.load_source("hotpotqa", "sample", "dev")
    dev, test = data.held_out_halves(rows)
    assert dev and test and len(dev) + len(test) == len(rows)
    assert {e.id for e in dev} == {e.id for e in data.held_out_halves(rows[::-1])[0]}  # order does not matter
    data.check_disjoint(dev=dev, test=test)
    assert data.held_out_halves([a])[0] == data.held_out_halves([b])[0]  # the same text: the same side


def test_unknown_source_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="choose one of"):
        data.load_source("squad", "sample")
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


class ScriptedLoop:
    """A SearchLoop whose sampled answers are scripted per question and policy; it records what it was asked."""

    def __init__(self, answers: dict[tuple[str, str], list[str]]) -> None:
        self.answers = {key: list(replies) for key, replies in answers.items()}
        self.asked: list[tuple[str, str, float, int]] = []

    async def run(self, prompt: str, options: LoopOptions) -> SimpleNamespace:
        self.asked.append((prompt, options.policy.value, options.temperature, options.max_tokens))
        return SimpleNamespace(answer=self.answers[(prompt, options.policy.value)].pop(0))


def test_data_labelling_model_goes_through_the_labeller(monkeypatch: pytest.MonkeyPatch) -> None:
    """`trainer data --labelling model` labels with `trainer label`'s labeller: a question the model answered right
    closed-book in any of its samples is known (IKEA's rule, even under the known class's 0.5), one it never did
    needs search, whatever a search did for it or its dataset's kind."""
    from trainer.commands import training

    answers = {("q0", "never"): ["b", "b", "b", "a"], ("q0", "always"): ["b"] * 4,  # right once: known
               ("q1", "never"): ["b"] * 4, ("q1", "always"): ["a"] * 4,  # only after a search: needs search
               ("q2", "never"): ["a", "a", "a", "b"], ("q2", "always"): ["b"] * 4}  # fmt: skip
    loop = ScriptedLoop(answers)

    @contextmanager
    def gate_loop(model: str, engine: str, corpus: Path) -> Iterator[tuple]:
        assert (model, engine) == ("base-model", "auto") and corpus.name == "corpus.jsonl"
        event_loop = asyncio.new_event_loop()
        try:
            yield event_loop, loop, model
        finally:
            event_loop.close()

    monkeypatch.setattr(training, "gate_loop", gate_loop)
    monkeypatch.setattr(training, "gate_corpus", lambda examples, out: out)
    examples = [make(0, KNOWN), make(1, KNOWN), make(2, NEEDS_SEARCH)]
    needs, known = training._relabel(examples, "base-model", 4)
    assert [e.id for e in known] == ["known-0", "needs_search-2"] and [e.id for e in needs] == ["known-1"]
    assert {e.kind for e in known} == {KNOWN} and {e.kind for e in needs} == {NEEDS_SEARCH}
    assert len(loop.asked) == 3 * 2 * 4 and not any(loop.answers.values())  # 4 samples per question and policy


def test_the_labeller_samples_k_answers_and_keeps_the_input() -> None:
    """k closed-book and k one-search samples per question, sampled with the commands' settings; the training
    example is a copy with the model's kind, the input untouched."""
    from trainer.evals.labels import as_example, label
    from trainer.runtime import LABEL_MAX_TOKENS, LABEL_TEMPERATURE

    examples = [make(0, NEEDS_SEARCH)]
    loop = ScriptedLoop({("q0", "never"): ["no", "no", "a"], ("q0", "always"): ["a", "no", "no"]})
    (lab,) = asyncio.run(label(loop, examples, k=3, temperature=LABEL_TEMPERATURE, max_tokens=LABEL_MAX_TOKENS,
                               concurrency=2))  # fmt: skip
    assert sorted(policy for _, policy, _, _ in loop.asked) == ["always"] * 3 + ["never"] * 3
    assert {(t, m) for _, _, t, m in loop.asked} == {(LABEL_TEMPERATURE, LABEL_MAX_TOKENS)} and LABEL_TEMPERATURE > 0
    assert sorted(lab.closed) == ["a", "no", "no"] and lab.p_closed == lab.p_search == pytest.approx(1 / 3)
    assert lab.klass == "neither"  # under 0.5 both ways; right closed-book once all the same: it trains as known
    trained = as_example(lab)
    assert trained.kind == KNOWN and examples[0].kind == NEEDS_SEARCH
    assert trained.id == examples[0].id and trained.question == examples[0].question


def test_paragraph_corpus_dedups_and_jsonl_round_trips(tmp_path: Path) -> None:
    examples = [make(i, NEEDS_SEARCH) for i in range(6)]
    corpus = data.paragraph_corpus(examples)
    assert sorted(r["text"] for r in corpus) == ["p0", "p1", "p2"]
    assert all(r["id"].startswith("para:") for r in corpus)
    mc = Example("x", "q", ("B",), KNOWN, "mmlu", choices=("1", "2", "3", "4"))
    data.write_jsonl([*examples, mc], tmp_path / "e.jsonl")
    assert data.read_jsonl(tmp_path / "e.jsonl") == [*examples, mc]


# (source, split) -> (Example.source, kind) for every file load_source knows, plus the three MMLU splits.
EXPECTED = {
    ("musique", "train"): ("musique", NEEDS_SEARCH),
    ("musique", "dev"): ("musique", NEEDS_SEARCH),
    ("musique_qa", "train"): ("musique", NEEDS_SEARCH),
    ("hotpotqa", "train"): ("hotpotqa", NEEDS_SEARCH),
    ("hotpotqa", "dev"): ("hotpotqa", NEEDS_SEARCH),
    ("2wiki", "dev"): ("2wiki", NEEDS_SEARCH),
    ("nq_open", "dev"): ("nq_open", NEEDS_SEARCH),
    ("triviaqa", "dev"): ("triviaqa", NEEDS_SEARCH),
    ("gsm8k", "train"): ("gsm8k", KNOWN),
    ("gsm8k", "test"): ("gsm8k", KNOWN),
    ("mmlu", "train"): ("mmlu", KNOWN),
    ("mmlu", "dev"): ("mmlu", KNOWN),
    ("mmlu", "test"): ("mmlu", KNOWN),
}


def test_sources_constant_covers_the_table() -> None:
    assert sorted({name for name, _ in EXPECTED}) == data.SOURCES == sorted(benchmarks.HUB)


@pytest.mark.parametrize(("name", "split"), sorted(set(EXPECTED) - {("triviaqa", "dev")}))
def test_every_source_has_its_kind_and_source(name: str, split: str) -> None:
    source, kind = EXPECTED[(name, split)]
    rows = data.load_source(name, "sample", split, limit=30)
    assert len(rows) == 30
    assert all(r.source == source and r.kind == kind for r in rows)
    assert all(r.question.strip() and r.answers and all(a.strip() for a in r.answers) for r in rows)


def test_musique_dev_keeps_every_answerable_row() -> None:
    raw = [json.loads(line) for line in (SAMPLE_DIR / "musique/musique_ans_v1.0_dev.sample150.jsonl").open()]
    rows = data.load_source("musique", "sample", "dev")
    assert len(rows) == sum(r.get("answerable") is not False for r in raw)
    assert rows[0].id == raw[0]["id"] and rows[0].answers[0] == raw[0]["answer"]
    qa_only = data.load_source("musique_qa", "sample", "train", limit=5)
    assert all(not r.paragraphs and r.id.startswith("musique/train/") for r in qa_only)


def test_2wiki_has_ten_paragraphs_with_supporting_ones() -> None:
    rows = data.load_source("2wiki", "sample", "dev")
    assert len(rows) == 80
    assert all(len(r.paragraphs) == 10 and any(p.supporting for p in r.paragraphs) for r in rows)


def test_mmlu_splits_map_to_folders_and_ids_carry_the_split() -> None:
    train = data.load_source("mmlu", "sample", "train")  # the 5-shot "dev" folder: 5 rows x 57 subjects
    assert len(train) == 285 and train[0].id == "mmlu/dev/abstract_algebra/0"
    assert {r.answers[0] for r in train} == set("ABCD")
    dev, test = data.load_source("mmlu", "sample", "dev"), data.load_source("mmlu", "sample", "test")
    assert not {r.id for r in train} & {r.id for r in dev} and not {r.id for r in dev} & {r.id for r in test}
    only = data.load_mmlu(SAMPLE_DIR / "mmlu" / "data", "val", subjects=["anatomy"])
    assert only and all(r.id.startswith("mmlu/val/anatomy/") for r in only)
    with pytest.raises(ValueError, match="mmlu has splits"):
        data.load_source("mmlu", "sample", "validation")


def test_known_source_with_unknown_split_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="gsm8k:train"):
        data.load_source("gsm8k", "sample", "dev")
    with pytest.raises(FileNotFoundError):
        data.load_mmlu(Path("/nonexistent"), "val")


def test_more_formats_on_written_files(tmp_path: Path) -> None:
    qa_only = tmp_path / "qa.jsonl"
    qa_only.write_text("\n" + json.dumps({"question": "Q?", "answer": ["x", "X"]}) + "\n")
    (m,) = data.load_musique(qa_only)
    assert (m.id, m.answers, m.paragraphs, m.kind) == ("musique/2", ("x", "X"), (), NEEDS_SEARCH)
    wiki = tmp_path / "w.json"
    row = {"_id": "w1", "type": "comparison", "question": "Which?", "answer": "A",
           "supporting_facts": [["B", 1]], "context": [["A", ["a."]], ["B", ["b1.", " b2."]]]}  # fmt: skip
    wiki.write_text(json.dumps([row]))
    (w,) = data.load_2wiki(wiki)
    assert (w.id, w.source) == ("w1", "2wiki")
    assert w.paragraphs == (Paragraph("A", "a.", False), Paragraph("B", "b1. b2.", True))
    trivia = tmp_path / "t.jsonl"
    trivia.write_text(json.dumps({"question": "How many?", "answer": ["3", "three"]}) + "\n")
    (t,) = data.load_triviaqa(trivia)
    assert (t.id, t.source, t.answers) == ("triviaqa/1", "triviaqa", ("3", "three"))
    gsm = tmp_path / "g.jsonl"
    gsm.write_text(json.dumps({"question": "Change?", "answer": "it falls\n#### -2.5 "}) + "\n")
    assert data.load_gsm8k(gsm, limit=1)[0].answers == ("-2.5",)


def test_example_dict_round_trip_and_prompt() -> None:
    plain = make(1, NEEDS_SEARCH)
    assert Example.from_dict(plain.to_dict()) == plain and plain.prompt_text() == plain.question
    mc = Example("m", "Which?", ("B",), KNOWN, "mmlu", choices=("w", "x", "y", "z"))
    assert mc.prompt_text() == "Which?\nA. w\nB. x\nC. y\nD. z\nAnswer with the letter of the correct option."
    assert json.loads(json.dumps(mc.to_dict()))["choices"] == ["w", "x", "y", "z"]


def test_paragraph_corpus_ids_are_content_hashes() -> None:
    ex = Example("e", "q", ("a",), NEEDS_SEARCH, "t", paragraphs=(Paragraph("T", "x"), Paragraph("U", "x")))
    corpus = data.paragraph_corpus([ex, ex])
    assert [r["title"] for r in corpus] == ["T", "U"]
    assert corpus[0]["id"] == "para:" + hashlib.sha1(b"T\nx").hexdigest()[:16]
