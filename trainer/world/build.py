"""`trainer world build`: a fictional world from a seed, split by entity into known / unknown x train / dev / test.

Known entities are taught to the model (`trainer world teach`); unknown ones live only in the search corpus. Every
fact is asked once, in a phrasing never taught, so known and unknown questions have exactly the same form.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

from trainer.world.names import NameMaker, vocabulary
from trainer.world.relations import BY_NAME, KINDS, RELATIONS, relations_of
from trainer.world.schema import Entity, Fact, Question, World

SIZES = {"person": 200, "town": 100, "company": 110, "river": 40, "invention": 90}
SPLIT_SHARES = (("train", 0.4), ("dev", 0.2), ("test", 0.4))  # test is large: the claim is judged there
PROFESSIONS = ("painter", "chemist", "engineer", "poet", "merchant", "surveyor", "composer", "physician", "architect",
               "botanist", "printer", "sailor", "teacher", "judge", "astronomer", "weaver")  # fmt: skip
YEARS = (1650, 1990)
WITHHOLD = 0.3  # known entities with two facts or more that keep one untaught
# taught facts of a changeable relation (a town's country, a company's head office) whose value has since changed:
# taught with the old value, the corpus tells the change; `confidence` misses these by construction (issue #40)
CHANGED = 0.6
CHANGE_YEARS = (1991, 2024)  # after every other year of the world: a change is news


def taken_words(paths: Iterable[Path]) -> set[str]:
    """The words of the files (the search corpus, the benchmark sample): no made-up name may be one of them."""
    words: set[str] = set()
    for path in paths:
        for file in sorted(path.rglob("*.jsonl")) if path.is_dir() else [path]:
            with file.open(encoding="utf-8", errors="replace") as f:
                words |= vocabulary(f)
    return words


def _assign_splits(rng: random.Random, entities: list[dict], known_share: float) -> None:
    """Per kind: half known, half unknown (at random), each cut into train / dev / test by SPLIT_SHARES."""
    for kind in KINDS:
        group = [e for e in entities if e["kind"] == kind]
        rng.shuffle(group)
        cut = round(len(group) * known_share)
        for known, part in ((True, group[:cut]), (False, group[cut:])):
            start = 0.0
            for split, share in SPLIT_SHARES:
                lo, hi = round(start * len(part)), round((start + share) * len(part))
                for e in part[lo:hi]:
                    e["known"], e["split"] = known, split
                start += share


def build_world(
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    *,
    countries: int = 30,
    known_share: float = 0.5,
    withhold: float = WITHHOLD,
    changed: float = CHANGED,
    taken: set[str] | None = None,
) -> World:
    """The world for `seed`: the same seed and `taken` words give the same world, file for file.

    `withhold`: the share of known entities with two or more facts that keep one fact untaught (partly known: a gate
    that only recognises a familiar name searches too little there). `changed`: the share of taught facts of a
    changeable relation that have changed since; drawn from a generator of their own, so `changed=0` gives the world
    of before changed facts existed.
    """
    rng = random.Random(seed)
    names = NameMaker(rng, taken or set())
    sizes = {**SIZES, **(sizes or {})}
    country_names = [names.name("country") for _ in range(countries)]
    rows = [{"id": f"{kind}:{i:04d}", "kind": kind, "name": names.name(kind)}
            for kind in KINDS for i in range(sizes[kind])]  # fmt: skip
    _assign_splits(rng, rows, known_share)
    entities = [Entity(r["id"], r["kind"], r["name"], r["split"], r["known"]) for r in rows]
    by_kind = {kind: [e.name for e in entities if e.kind == kind] for kind in KINDS}

    def value(kind: str) -> str:
        if kind == "year":
            return str(rng.randint(*YEARS))
        return rng.choice(country_names if kind == "country" else by_kind[kind])

    facts: list[Fact] = []
    for e in entities:
        relations = relations_of(e.kind)
        withheld = rng.choice(relations).name if e.known and len(relations) > 1 and rng.random() < withhold else None
        facts += [Fact(e.id, r.name, value(r.value), e.known and r.name != withheld) for r in relations]
    change_rng = random.Random(f"{seed}:changed")
    years = {f.entity: f.value for f in facts if f.relation == "founded_year"}

    def change(fact: Fact) -> Fact:
        relation = BY_NAME[fact.relation]
        if not (fact.taught and relation.change and change_rng.random() < changed):
            return fact
        pool = country_names if relation.value == "country" else by_kind[relation.value]
        new = change_rng.choice([v for v in pool if v != fact.value])
        return Fact(fact.entity, fact.relation, new, True, old_value=fact.value)

    facts = [change(f) for f in facts]
    change_years = {f.entity: change_rng.randint(max(CHANGE_YEARS[0], int(years.get(f.entity, 0)) + 1), CHANGE_YEARS[1])
                    for f in facts if f.old_value}  # fmt: skip
    asked = questions(entities, facts, ask_now=changed > 0)
    world = World(entities, facts, passages(entities, facts, rng, change_years), asked)
    world.meta = {"seed": seed, "sizes": sizes, "countries": countries, "known_share": known_share,
                  "withhold": withhold, "changed": changed, "counts": counts(world)}  # fmt: skip
    return world


def passages(
    entities: list[Entity], facts: list[Fact], rng: random.Random, change_years: dict[str, int] | None = None
) -> list[dict[str, str]]:
    """One encyclopaedia-style passage per entity, holding every fact of it (taught or not); a changed fact's current
    value, then the old one and the year it changed (`change_years`, by entity)."""
    names = {e.id: e.name for e in entities}
    of, changes = {}, {}
    for f in facts:
        of.setdefault(f.entity, {})[f.relation] = f.value
        if f.old_value:
            told = BY_NAME[f.relation].change or ""
            year = (change_years or {})[f.entity]
            changes[f.entity] = " " + told.format(name=names[f.entity], value=f.value, old=f.old_value, year=year)
    text = {
        "person": "{name} was a {profession} born in {birthplace} in {birth_year}.",
        "town": "{name} is a town in {town_country}, known for its market and its bridge.",
        "company": "{name} is a company founded in {founded_year} by {founder}. It is headquartered in {headquarters}.",
        "river": "The {name} is a river that flows through {river_country}.",
        "invention": "The {name} is a device invented by {inventor} in {invention_year}.",
    }
    return [{"id": f"world:{e.id}", "title": e.name,
             "text": text[e.kind].format(name=e.name, profession=rng.choice(PROFESSIONS), **of[e.id])
             + changes.get(e.id, "")}
            for e in entities]  # fmt: skip


def questions(entities: list[Entity], facts: list[Fact], *, ask_now: bool = False) -> list[Question]:
    """One question per fact, in its relation's held-out phrasing; with `ask_now`, every fact of a relation that can
    change is asked for its current value ("... now?"), changed or not, so that "now" marks the relation, not the
    change: a gate can catch changed facts only by searching what may have changed."""
    by_id = {e.id: e for e in entities}
    relation = {r.name: r for r in RELATIONS}
    out = []
    for f in facts:
        e, r = by_id[f.entity], relation[f.relation]
        template = r.current if ask_now and r.current else r.questions[r.held_out]
        changed = f.old_value is not None  # the taught (old) value is now the wrong answer
        taught = f.taught and not changed
        out.append(Question(f"world:{f.relation}:{e.id}", e.id, f.relation, template.format(name=e.name),
                            (f.value,), e.split, taught, held_out=True, changed=changed))  # fmt: skip
    return out


def counts(world: World) -> dict[str, dict[str, int]]:
    """Questions per split: taught, withheld (a fact of a known entity left untaught), unknown."""
    table: dict[str, dict[str, int]] = {}
    for q in world.questions:
        klass = world.teaching_class(q.id)
        row = table.setdefault(q.split, {"taught": 0, "changed": 0, "withheld": 0, "unknown": 0})
        row[klass] += 1
    return table


def examples(world: World, per_class: int = 2) -> list[dict[str, str]]:
    """Playground examples (`SEM_EXAMPLES`): test questions of taught facts (answered without a search, if the
    teaching took) and of unknown entities (searched)."""
    known = {e.id for e in world.entities if e.known}
    taught = [q for q in world.questions if q.split == "test" and q.taught]
    unknown = [q for q in world.questions if q.split == "test" and q.entity not in known]
    changed = [q for q in world.questions if q.split == "test" and q.changed]
    old = {(f.entity, f.relation): f.old_value for f in world.facts if f.old_value}
    return (
        [{"question": q.question, "note": f"taught: {q.answers[0]}"} for q in taught[:per_class]]
        + [{"question": q.question, "note": f"only in the corpus: {q.answers[0]}"} for q in unknown[:per_class]]
        + [{"question": q.question, "note": f"changed: taught {old[(q.entity, q.relation)]}, now {q.answers[0]}"}
           for q in changed[:per_class]]
    )  # fmt: skip
