"""A world on disk: five files in one folder, so a user can load their own world instead of generating one.

- `entities.jsonl`: `{"id", "kind", "name", "split", "known"}`; split is train / dev / test (by entity: no test
  entity is ever seen by gate training); known says the entity is taught to the model.
- `facts.jsonl`: `{"entity", "relation", "value", "taught", "old_value"}`; a fact of a known entity may be withheld
  from teaching (`taught: false`: a partly known entity, whose name the model knows but not this fact); a changed fact
  (`old_value` set) was taught with its old value, and `value` (in the corpus) is the current one.
- `passages.jsonl`: the search corpus, SEM's corpus format `{"id", "title", "text"}`, one passage per entity.
- `questions.jsonl`: `{"id", "entity", "relation", "question", "answers", "split", "taught", "held_out", "changed"}`,
  one per fact; held_out says its phrasing was never taught; changed says it asks a changed fact's current value.
- `world.json`: how it was made (seed, sizes, counts).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from functools import cached_property
from pathlib import Path
from typing import Any

from sem.evaldata.benchmarks import KNOWN, NEEDS_SEARCH, Example

SPLITS = ("train", "dev", "test")
SOURCE = "world"


@dataclass(frozen=True, slots=True)
class Entity:
    id: str
    kind: str
    name: str
    split: str
    known: bool


@dataclass(frozen=True, slots=True)
class Fact:
    entity: str
    relation: str
    value: str
    taught: bool
    old_value: str | None = None  # a changed fact: taught with this value; `value` is the current one

    @property
    def taught_value(self) -> str:
        return self.old_value or self.value


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    entity: str
    relation: str
    question: str
    answers: tuple[str, ...]
    split: str
    taught: bool
    held_out: bool = True
    changed: bool = False  # asks the current value of a fact taught with its old one

    def example(self) -> Example:
        """The question as the evaluation core reads it; `kind` says what was taught (not what the model knows)."""
        return Example(self.id, self.question, self.answers, KNOWN if self.taught else NEEDS_SEARCH, SOURCE)


@dataclass
class World:
    entities: list[Entity]
    facts: list[Fact]
    passages: list[dict[str, str]]
    questions: list[Question]
    meta: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def by_id(self) -> dict[str, Entity]:
        return {e.id: e for e in self.entities}

    @cached_property
    def _questions(self) -> dict[str, Question]:
        return {q.id: q for q in self.questions}

    def question(self, question_id: str) -> Question:
        return self._questions[question_id]

    def split_of(self, example: Example) -> str:
        """The split of a world question: its entity's."""
        return self._questions[example.id].split

    def teaching_class(self, question_id: str) -> str:
        """taught, changed (taught with an old value; the corpus holds the current one), withheld (a fact of a known
        entity left untaught) or unknown (an entity only the corpus holds)."""
        q = self._questions[question_id]
        if q.changed:
            return "changed"
        return "taught" if q.taught else "withheld" if self.by_id[q.entity].known else "unknown"

    def partly_known(self) -> set[str]:
        """Known entities with a fact withheld from teaching."""
        known = {e.id for e in self.entities if e.known}
        return {f.entity for f in self.facts if f.entity in known and not f.taught}


def _row(cls: type, row: dict[str, Any], where: str) -> Any:
    names = {f.name for f in fields(cls)}
    try:
        values = {k: tuple(v) if k == "answers" else v for k, v in row.items() if k in names}
        return cls(**values)
    except TypeError as exc:
        raise ValueError(f"{where}: {exc}; expected the fields {sorted(names)}") from exc


def _read(path: Path, cls: type | None) -> list[Any]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                row = json.loads(line)
                rows.append(row if cls is None else _row(cls, row, f"{path}:{n}"))
    return rows


def load_world(folder: Path) -> World:
    """A world from its folder, checked: facts and questions name existing entities, splits are known ones."""
    folder = Path(folder)
    world = World(
        entities=_read(folder / "entities.jsonl", Entity),
        facts=_read(folder / "facts.jsonl", Fact),
        passages=_read(folder / "passages.jsonl", None),
        questions=_read(folder / "questions.jsonl", Question),
        meta=json.loads((folder / "world.json").read_text()) if (folder / "world.json").exists() else {},
    )
    check(world)
    return world


def check(world: World) -> None:
    ids = {e.id for e in world.entities}
    if len(ids) != len(world.entities):
        raise ValueError("entities.jsonl: entity ids must be unique")
    for e in world.entities:
        if e.split not in SPLITS:
            raise ValueError(f"entities.jsonl: {e.id} has split {e.split!r}; use one of {SPLITS}")
    for what, rows in (("facts", world.facts), ("questions", world.questions)):
        for r in rows:
            if r.entity not in ids:
                raise ValueError(f"{what}.jsonl: {r.entity!r} is not an entity of entities.jsonl")
    splits = {e.id: e.split for e in world.entities}
    for q in world.questions:
        if q.split != splits[q.entity]:
            raise ValueError(
                f"questions.jsonl: {q.id} is in {q.split} but its entity {q.entity} is in {splits[q.entity]}"
            )


def save_world(world: World, folder: Path) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("entities", world.entities), ("facts", world.facts), ("questions", world.questions)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in rows))
    (folder / "passages.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in world.passages))
    (folder / "world.json").write_text(json.dumps(world.meta, indent=2) + "\n")
