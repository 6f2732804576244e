"""Made-up names from syllables, checked absent from what the model or the search could already hold."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

ONSETS = ("b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "pr", "r", "s", "st",
          "t", "tr", "v", "z", "th", "sh", "ks", "qu")  # fmt: skip
VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ou")
CODAS = ("", "", "n", "r", "l", "s", "m", "k", "nd", "x")
COMPANY_SUFFIXES = ("Works", "Holdings", "Mills", "Foundry", "Trading", "Brothers", "Company", "Industries")
INVENTION_NOUNS = ("lamp", "loom", "engine", "press", "clock", "valve", "compass", "kiln", "pump", "lens",
                   "drill", "furnace", "telegraph", "still", "harness", "sextant", "bellows", "winch", "spindle",
                   "stove")  # fmt: skip

_WORD = re.compile(r"[a-z]+")


def vocabulary(texts: Iterable[str]) -> set[str]:
    """Every lower-cased word of the texts: a name's words must be none of them."""
    words: set[str] = set()
    for text in texts:
        words.update(_WORD.findall(text.lower()))
    return words


class NameMaker:
    """Unique, pronounceable made-up words, none a word of `taken` nor of each other."""

    def __init__(self, rng: random.Random, taken: set[str]) -> None:
        self.rng = rng
        self.taken = taken
        self.used: set[str] = set()

    def word(self, syllables: tuple[int, int] = (2, 2)) -> str:
        while True:
            n = self.rng.randint(*syllables)
            parts = [self.rng.choice(ONSETS) + self.rng.choice(VOWELS) for _ in range(n)]
            word = "".join(parts) + self.rng.choice(CODAS)
            if 4 <= len(word) <= 8 and word not in self.taken and word not in self.used:
                self.used.add(word)
                return word.capitalize()

    def name(self, kind: str) -> str:
        if kind == "person":
            return f"{self.word()} {self.word()}"
        if kind == "company":
            return f"{self.word()} {self.rng.choice(COMPANY_SUFFIXES)}"
        if kind == "invention":
            return f"{self.word()} {self.rng.choice(INVENTION_NOUNS)}"
        return self.word()  # town, river, country
