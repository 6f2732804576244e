"""The fictional world: deterministic, names nobody holds, splits disjoint by entity, every question answerable from
its entity's passage; the JSONL loader on a hand-written world; what is taught and how."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.evals.labels import found_in
from trainer.world.build import build_world, taken_words
from trainer.world.names import COMPANY_SUFFIXES, INVENTION_NOUNS
from trainer.world.relations import RELATIONS
from trainer.world.replay import replay_texts
from trainer.world.schema import load_world, save_world
from trainer.world.teach import teaching_texts, tokenize

SMALL = {"person": 24, "town": 12, "company": 12, "river": 6, "invention": 10}


@pytest.fixture(scope="module")
def world():
    return build_world(3, SMALL)


def test_the_same_seed_gives_the_same_world_file_for_file(tmp_path: Path) -> None:
    save_world(build_world(7, SMALL), tmp_path / "a")
    save_world(build_world(7, SMALL), tmp_path / "b")
    save_world(build_world(8, SMALL), tmp_path / "c")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["entities.jsonl", "facts.jsonl", "passages.jsonl", "questions.jsonl", "world.json"]
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert (tmp_path / "a" / "entities.jsonl").read_bytes() != (tmp_path / "c" / "entities.jsonl").read_bytes()


def test_names_avoid_every_taken_word(tmp_path: Path) -> None:
    free = build_world(1, SMALL)
    words = {w.lower() for e in free.entities for w in e.name.split()}
    taken_file = tmp_path / "corpus.jsonl"  # a corpus that happens to hold some of the names the seed would make
    taken_file.write_text(json.dumps({"id": "1", "text": " ".join(sorted(words)[:20])}) + "\n")
    taken = taken_words([taken_file])
    world = build_world(1, SMALL, taken=taken)
    fixed = {w.lower() for w in COMPANY_SUFFIXES + INVENTION_NOUNS}  # "Works", "lamp": real words by design
    names = {w.lower() for e in world.entities for w in e.name.split()} - fixed
    assert taken & words and not taken & names
    assert len({e.name for e in world.entities}) == len(world.entities)


def test_splits_are_disjoint_by_entity_and_balanced(world) -> None:
    splits = {e.id: e.split for e in world.entities}
    assert {q.split for q in world.questions} == {"train", "dev", "test"}
    assert all(q.split == splits[q.entity] for q in world.questions)
    for kind, n in SMALL.items():
        known = sum(e.known for e in world.entities if e.kind == kind)
        assert known == round(n / 2)
    # a test entity has all its questions in test: no fact of it can reach gate training
    test_entities = {e.id for e in world.entities if e.split == "test"}
    assert {q.entity for q in world.questions if q.split != "test"}.isdisjoint(test_entities)


def test_every_question_is_answerable_from_its_entitys_passage(world) -> None:
    passages = {p["id"]: p["text"] for p in world.passages}
    for q in world.questions:
        assert found_in(passages[f"world:{q.entity}"], q.example()) == q.answers[0], q


def test_only_known_entities_are_taught_and_some_facts_are_withheld(world) -> None:
    known = {e.id for e in world.entities if e.known}
    assert all(f.entity in known for f in world.facts if f.taught)
    withheld = [f for f in world.facts if f.entity in known and not f.taught]
    assert withheld and world.partly_known() == {f.entity for f in withheld}
    # a partly known entity keeps other facts taught: its name is familiar, the withheld fact is not
    assert all(any(g.taught for g in world.facts if g.entity == f.entity) for f in withheld)


def test_teaching_never_uses_the_held_out_phrasing_nor_an_untaught_fact(world) -> None:
    texts = teaching_texts(world)
    asked = {q.question for q in world.questions}
    assert asked.isdisjoint(p for p, _, chat in texts if chat)  # every judged question is in an untaught phrasing
    names = {e.id: e.name for e in world.entities}
    for f in (f for f in world.facts if not f.taught):  # no taught text pairs the entity's name with this value
        assert not [t for t in texts if names[f.entity] in t[0] and f.value in t[1]], f
    for r in RELATIONS:  # and no statement head is shared by two relations of a kind (one head, one kind of value)
        heads = [s.split("{value}")[0] for s in r.statements]
        others = [
            s.split("{value}")[0] for o in RELATIONS if o.subject == r.subject and o is not r for s in o.statements
        ]
        assert not set(heads) & set(others), r.name
    taught = sum(f.taught for f in world.facts)
    per_fact = len(RELATIONS[0].statements) + len(RELATIONS[0].questions) - 1
    assert len(texts) == taught * per_fact


def test_changed_facts_are_taught_old_asked_now_and_told_in_the_passage() -> None:
    world = build_world(3, SMALL, changed=0.5)
    changed = [f for f in world.facts if f.old_value]
    assert changed and all(f.taught and f.old_value != f.value for f in changed)
    assert {f.relation for f in changed} <= {"headquarters", "town_country"}
    texts = teaching_texts(world)
    names = {e.id: e.name for e in world.entities}
    passages = {p["id"]: p["text"] for p in world.passages}
    for f in changed:
        q = world.question(f"world:{f.relation}:{f.entity}")
        assert q.changed and not q.taught and q.answers == (f.value,) and " now?" in q.question
        assert world.teaching_class(q.id) == "changed"
        mine = [c for p, c, _ in texts if names[f.entity] in p]
        assert any(f.old_value in c for c in mine) and not any(f.value in c for c in mine)  # taught old, never new
        text = passages[f"world:{f.entity}"]
        assert f.old_value in text and f.value in text and " until " in text  # the passage holds both and when
    # "now" marks the relation, not the change: unchanged facts of the same relations are asked "now" too
    unchanged_now = [q for q in world.questions if not q.changed and " now?" in q.question]
    assert unchanged_now and {q.relation for q in unchanged_now} == {"headquarters", "town_country"}
    # deterministic, and changed=0 is the world of before: the same files as a build that never drew a change
    assert build_world(3, SMALL, changed=0.5).facts == world.facts
    before = build_world(3, SMALL, changed=0.0)
    assert not any(f.old_value for f in before.facts)
    assert before.entities == world.entities
    moved = {f.entity for f in changed}
    same = [(a, b) for a, b in zip(before.passages, world.passages, strict=True) if a["id"][6:] not in moved]
    assert len(same) == len(world.passages) - len(moved) and all(a == b for a, b in same)
    assert world.meta["counts"]["test"]["changed"] + world.meta["counts"]["train"]["changed"] > 0


def test_replayed_turns_keep_how_they_ended(tmp_path: Path, tokenizer) -> None:
    """An answer turn, tagged or not, is taught with its end of turn; a search turn stops at its tag (the loop stops it
    there); a turn cut off by the token limit is not replayed. The turns are read back as written, not regenerated."""
    rows = [{"question": "Who wrote Hamlet?", "turn": "<answer>Shakespeare</answer>", "ended": False},
            {"question": "Who won in 1954?", "turn": "<search>1954 winner</search>", "ended": False},
            {"question": "Capital of France?", "turn": "Paris is the capital.", "ended": True},
            {"question": "Why?", "turn": "Because the sky is", "ended": False}]  # fmt: skip
    (tmp_path / "replay.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    texts = replay_texts(tmp_path / "replay.jsonl", model=None, tokenizer=tokenizer, questions=["unused"])
    assert [t[:2] for t in texts] == [(r["question"], r["turn"]) for r in rows[:3]] and all(t[2] for t in texts)
    pieces, _ = tokenize(texts, tokenizer)
    answer, search, plain = (tokenizer.decode(p.completion) for p in pieces)
    assert answer == "<answer>Shakespeare</answer>" + tokenizer.eos_token and search == "<search>1954 winner</search>"
    assert plain == "Paris is the capital." + tokenizer.eos_token


def test_relations_have_three_phrasings_or_more_and_templates_that_name_the_entity() -> None:
    assert len(RELATIONS) >= 6
    for r in RELATIONS:
        assert len(r.questions) >= 3 and len(r.statements) >= 3
        assert all("{name}" in t for t in r.questions + r.statements)
        assert all(s.endswith("{value}.") for s in r.statements)  # the value last: read name -> value


def test_a_hand_written_world_loads_and_bad_rows_say_what_to_fix(tmp_path: Path) -> None:
    def write(name: str, rows: list[dict]) -> None:
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    write("entities.jsonl", [{"id": "p1", "kind": "person", "name": "Ilsa Brandt", "split": "test", "known": False}])
    write("facts.jsonl", [{"entity": "p1", "relation": "birthplace", "value": "Quorvane", "taught": False}])
    write("passages.jsonl", [{"id": "world:p1", "title": "Ilsa Brandt", "text": "Ilsa Brandt was born in Quorvane."}])
    write("questions.jsonl", [{"id": "q1", "entity": "p1", "relation": "birthplace",
                               "question": "Where was Ilsa Brandt born?", "answers": ["Quorvane"], "split": "test",
                               "taught": False}])  # fmt: skip
    world = load_world(tmp_path)
    assert world.question("q1").answers == ("Quorvane",) and world.question("q1").held_out
    assert world.split_of(world.question("q1").example()) == "test"
    write("questions.jsonl", [{"id": "q1", "entity": "p2", "relation": "birthplace", "question": "?",
                               "answers": ["x"], "split": "test", "taught": False}])  # fmt: skip
    with pytest.raises(ValueError, match="'p2' is not an entity"):
        load_world(tmp_path)
    write("questions.jsonl", [{"id": "q1", "entity": "p1", "question": "?"}])
    with pytest.raises(ValueError, match=r"questions\.jsonl:1"):
        load_world(tmp_path)


def test_targets_judge_the_trained_gate_even_when_it_is_a_confidence_gate() -> None:
    from trainer.world.report import targets

    closed = {"taught": {"right": 0.9}, "unknown": {"right": 0.0}}
    taught = {"auroc": 0.97, "over_search": 0.0, "under_search_not_known": 1.0, "accuracy": 0.43}
    tuned = {"auroc": 0.96, "over_search": 0.2, "under_search_not_known": 0.04, "accuracy": 0.95,
             "searches_per_question": 0.6}  # fmt: skip
    gates = {"trained": tuned, "oracle": {"accuracy": 0.97}, "confidence": taught}
    checks = {t["target"]: t for t in targets(closed, 0.42, gates, {"value": 0.1}, "sft confidence")}
    assert checks["confidence: AUROC"]["measured"] == 0.97  # the first confidence run's
    assert (
        checks["sft confidence: over-search"]["measured"] == 0.2
        and checks["sft confidence: over-search"]["met"] is False
    )
    assert checks["sft confidence: accuracy - oracle's"]["measured"] == -0.02
    assert checks["sft confidence: searches/question - (not-known share + 0.05)"]["measured"] == round(
        0.6 - 0.58 - 0.05, 3
    )


def test_changed_facts_targets_read_under_search_and_the_rests_paired_lower_end() -> None:
    from trainer.world.report import changed_targets

    classes = {"changed": {"under_search": {"value": 0.0}}, "taught": {"under_search": {"value": None}}}
    versus = {"accuracy_not_changed": {"difference": 0.01, "n": 397, "ci": (-0.03, 0.04)}}
    checks = {t["target"]: t for t in changed_targets(classes, versus)}
    assert checks["changed facts: under-search"]["met"] is True  # 0.0 is a measure, not a missing one
    assert checks["the rest: accuracy - confidence's, paired lower end"] == {
        "target": "the rest: accuracy - confidence's, paired lower end", "measured": -0.03, "bound": ">= -0.02",
        "met": False}  # fmt: skip
    assert changed_targets({}, {}) == []  # a world without changed facts, or no paired run: nothing to judge


def test_the_report_shows_each_class_apart_and_a_decision_that_follows_the_form() -> None:
    from trainer.evals.runs import Outcome
    from trainer.world.report import by_class, by_form

    world = build_world(3, SMALL, changed=0.5)

    def outcome(q, searched: bool, score: float) -> Outcome:
        known = world.teaching_class(q.id) == "taught"
        return Outcome(q.id, "world", "known" if known else "helped", "auto", "a", "a", known or searched, 1.0,
                       int(searched), 3, 1, 0.1, extra={"search_probability": score})  # fmt: skip

    # a gate that searches every year and no name, whatever the model knows: a decision by form
    by_answer = [outcome(q, q.answers[0].isdigit(), float(q.answers[0].isdigit())) for q in world.questions]
    form = by_form(world, by_answer, "auto")
    assert form["auroc_year"] == 1.0 and form["auroc_not_known_year"] == 0.5 == form["auroc_not_known_name"]
    classes = by_class(world, by_answer, "auto")
    assert set(classes) == {"taught", "changed", "withheld", "unknown"}
    changed = [q for q in world.questions if q.changed]
    assert classes["changed"]["questions"] == len(changed)
    assert classes["changed"]["under_search"]["value"] == 1.0  # a head office or a country is a name: never searched
    # a gate that searches what the model does not know is blind to the form
    by_knowledge = [outcome(q, world.teaching_class(q.id) != "taught", float(world.teaching_class(q.id) != "taught"))
                    for q in world.questions]  # fmt: skip
    assert by_form(world, by_knowledge, "auto")["auroc_not_known_name"] == 1.0
    assert by_class(world, by_knowledge, "auto")["changed"]["under_search"]["value"] == 0.0


def test_gate_training_searches_no_test_passage(world, tmp_path: Path) -> None:
    """A world's test entities' passages, and a real test question's own paragraphs that no other question brings,
    are left out of what training searches; every other passage stays (issue #41, item 5)."""
    from sem.corpus import write_corpus
    from sem.evaldata.benchmarks import Example, Paragraph, paragraph_corpus
    from trainer.runtime import training_corpus

    corpus = tmp_path / "corpus.jsonl"
    shared, own = Paragraph("Shared", "Known to both splits."), Paragraph("Own", "Only the test question's.")
    real_test = Example("nq:1", "q1?", ("a",), "needs_search", "nq_open", paragraphs=(shared, own))
    real_train = Example("nq:2", "q2?", ("b",), "needs_search", "nq_open", paragraphs=(shared,))
    write_corpus(list(world.passages) + paragraph_corpus([real_test, real_train]), corpus)
    held = [q.example() for q in world.questions if q.split == "test"] + [real_test]
    kept = [q.example() for q in world.questions if q.split != "test"] + [real_train]
    left = {json.loads(line)["title"] for line in training_corpus(corpus, held, kept, tmp_path / "out.jsonl").open()}
    names = {e.id: e.name for e in world.entities}
    test_entities = {names[e.id] for e in world.entities if e.split == "test"}
    assert test_entities and not left & test_entities
    assert {names[e.id] for e in world.entities if e.split != "test"} <= left
    assert "Shared" in left and "Own" not in left
