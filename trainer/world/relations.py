"""The world's kinds of entities and the relations asked about them, each with its phrasings.

A relation has question templates (the first is held out from teaching: extraction is checked on a phrasing the
model never saw) and statements that end with the value (models learn name -> value in the order they read it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Relation:
    name: str
    subject: str  # the kind of entity it is asked about
    value: str  # a kind (the value is that entity's name) or "year"
    questions: tuple[str, ...]  # templates with {name}; the first is never taught
    statements: tuple[str, ...]  # "{name} ... {value}." phrasings taught as text
    # a relation whose value can change: how the corpus tells the change ({name}, {value}: current, {old}, {year}) and
    # the question that asks the current value (the held-out template, asked "now")
    change: str | None = None
    current: str | None = None

    @property
    def held_out(self) -> int:
        return 0


KINDS = ("person", "town", "company", "river", "invention")  # countries are values only: a name list

RELATIONS = (
    Relation(
        "birthplace", "person", "town",
        ("In which town was {name} born?", "Where was {name} born?", "What is the birthplace of {name}?",
         "{name} was born in which town?"),
        ("{name} was born in {value}.", "The birthplace of {name} is {value}.",
         "{name} came into the world in {value}."),
    ),
    Relation(
        "birth_year", "person", "year",
        ("In which year was {name} born?", "When was {name} born?", "What is the year of birth of {name}?",
         "{name} was born in which year?"),
        ("{name} was born in the year {value}.", "The year of birth of {name} is {value}.",
         "{name}'s year of birth was {value}."),
    ),
    Relation(
        "town_country", "town", "country",
        ("Which country is the town of {name} in?", "In which country is {name}?", "{name} is a town in which country?",
         "Where is the town of {name}?"),
        ("{name} is a town in {value}.", "The town of {name} lies in {value}.", "{name} is located in {value}."),
        change="{name} belonged to {old} until {year}, when it became part of {value}.",
        current="Which country is the town of {name} in now?",
    ),
    Relation(
        "founder", "company", "person",
        ("Which person started the company {name}?", "Who founded {name}?", "Who was the founder of {name}?",
         "{name} was founded by whom?"),
        ("{name} was founded by {value}.", "The founder of {name} is {value}.", "{name} was started by {value}."),
    ),
    Relation(
        "founded_year", "company", "year",
        ("In which year did {name} open for business?", "When was {name} founded?", "In what year was {name} founded?",
         "{name} was founded in which year?"),
        ("{name} was founded in {value}.", "The company {name} was established in {value}.",
         "{name} has existed since {value}."),
    ),
    Relation(
        "headquarters", "company", "town",
        ("In which town is the head office of {name}?", "Where is {name} headquartered?",
         "Where are the headquarters of {name}?", "{name} has its headquarters in which town?"),
        ("{name} is headquartered in {value}.", "The headquarters of {name} are in {value}.",
         "{name} has its head office in {value}."),
        change="{name} had its head office in {old} until {year}, when it moved to {value}.",
        current="In which town is the head office of {name} now?",
    ),
    Relation(
        "river_country", "river", "country",
        ("Which country is the {name} river in?", "Through which country does the {name} flow?",
         "In which country is the {name}?", "The {name} flows through which country?"),
        ("The {name} is a river in {value}.", "The {name} flows through {value}.",
         "The river {name} runs across {value}."),
    ),
    Relation(
        "inventor", "invention", "person",
        ("Which person came up with the {name}?", "Who invented the {name}?", "Who was the inventor of the {name}?",
         "The {name} was invented by whom?"),
        ("The {name} was invented by {value}.", "The inventor of the {name} is {value}.",
         "The {name} was first built by {value}."),
    ),
    Relation(
        "invention_year", "invention", "year",
        ("In which year did the {name} first appear?", "When was the {name} invented?",
         "In what year was the {name} invented?", "The {name} was invented in which year?"),
        ("The {name} was invented in {value}.", "The {name} dates from {value}.",
         "The {name} was first built in {value}."),
    ),
)  # fmt: skip

BY_NAME = {r.name: r for r in RELATIONS}


def relations_of(kind: str) -> list[Relation]:
    return [r for r in RELATIONS if r.subject == kind]
