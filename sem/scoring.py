"""Answer scoring: SQuAD-style normalisation, exact match, token F1, multiple-choice letters, numbers."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_LETTER = re.compile(r"(?:^|[\s(\[*])([A-D])(?:[\s).:\],*]|$)")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def normalize_answer(text: str) -> str:
    """Lower case, drop punctuation, articles and extra spaces (SQuAD's normalisation).

    >>> normalize_answer("The  Eiffel Tower!")
    'eiffel tower'
    """
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals one of the normalised golds.

    >>> exact_match("the Beatles", ["Beatles", "The Fab Four"])
    1.0
    """
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def f1(prediction: str, golds: Sequence[str]) -> float:
    """Token-level F1, the best over the golds.

    >>> round(f1("William Shakespeare wrote it", ["William Shakespeare"]), 3)
    0.667
    """
    pred_tokens = normalize_answer(prediction).split()
    best = 0.0
    for gold in golds:
        gold_tokens = normalize_answer(gold).split()
        if not pred_tokens or not gold_tokens:
            best = max(best, float(pred_tokens == gold_tokens))
            continue
        common = Counter(pred_tokens) & Counter(gold_tokens)
        overlap = sum(common.values())
        if overlap == 0:
            continue
        precision, recall = overlap / len(pred_tokens), overlap / len(gold_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def mc_letter(prediction: str) -> str | None:
    """The option letter (A-D) a multiple-choice answer gives, if any.

    >>> mc_letter("The answer is (C).")
    'C'
    >>> mc_letter("B") , mc_letter("I don't know")
    ('B', None)
    """
    found = _LETTER.search(prediction.strip())
    return found.group(1) if found else None


def last_number(text: str) -> str | None:
    """The last number in a text, without thousands separators (GSM8K answers).

    >>> last_number("She pays $1,200 in total.")
    '1200'
    """
    numbers = _NUMBER.findall(text)
    if not numbers:
        return None
    value = numbers[-1].replace(",", "").rstrip(".")
    return value[:-2] if value.endswith(".0") else value


def score(prediction: str, golds: Sequence[str], *, source: str = "", choices: Sequence[str] | None = None) -> float:
    """The F1-like score the rewards and the evaluation use, per kind of benchmark.

    Multiple choice: 1 if the letter matches (or the option's text is given exactly). GSM8K: 1 if the last number
    matches. Otherwise token F1.

    >>> score("(B) Paris", ["B"], choices=["Rome", "Paris", "Oslo", "Bern"])
    1.0
    >>> score("The answer is 42.", ["42"], source="gsm8k")
    1.0
    """
    if choices:
        letter = mc_letter(prediction)
        if letter is None:
            texts = {normalize_answer(c): "ABCD"[i] for i, c in enumerate(choices)}
            letter = texts.get(normalize_answer(prediction))
        return float(letter is not None and letter in golds)
    if source == "gsm8k":
        return float(last_number(prediction) in {last_number(g) for g in golds})
    return f1(prediction, golds)


def em_score(prediction: str, golds: Sequence[str], *, source: str = "", choices: Sequence[str] | None = None) -> float:
    """Exact match per kind of benchmark (for choices and numbers it equals `score`)."""
    if choices or source == "gsm8k":
        return score(prediction, golds, source=source, choices=choices)
    return exact_match(prediction, golds)
