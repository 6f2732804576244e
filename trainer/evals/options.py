"""Multiple choice scored by likelihood, not by what the model writes (../shared/EVALUATION.md).

A model with a letter reflex ("C" to every question) hides what it knows behind the reflex. Scoring each option by
the log-probability the model gives it after SEM's prompt and `<answer>` shows whether the knowledge is there: the
letter's own probability (A-D as the next token), and the option's text (mean log-probability per token, so long
options are not penalised for their length). Both predictions go through `letter_report` like the generated ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sem import protocol
from sem.evaldata.benchmarks import Example
from trainer.evals.likelihood import Scorer

LETTERS = "ABCD"


def _prefix(tokenizer: Any, example: Example) -> str:
    prompt = protocol.render_prompt(tokenizer, protocol.build_messages(example.prompt_text()))
    return prompt + protocol.ANSWER_OPEN


def _letter_ids(tokenizer: Any, letter: str) -> list[int]:
    """The single tokens that spell the letter, with and without a leading space."""
    ids = [tokenizer.encode(text, add_special_tokens=False) for text in (letter, " " + letter)]
    return sorted({i[0] for i in ids if len(i) == 1})


def score_options(scorer: Scorer, examples: Sequence[Example]) -> list[dict[str, Any]]:
    """Per multiple-choice question: the letter picked by letter likelihood and by option-text likelihood."""
    import torch

    letter_ids = {letter: _letter_ids(scorer.tokenizer, letter) for letter in LETTERS}
    rows = []
    for example in examples:
        if not example.choices:
            continue
        prefix_ids = scorer.encode(_prefix(scorer.tokenizer, example))
        logp = scorer.next_token_logprobs(prefix_ids)
        letters = LETTERS[: len(example.choices)]
        by_letter = {x: torch.logsumexp(logp[letter_ids[x]], dim=0).item() for x in letters}
        by_text = {x: _mean_logprob(scorer, prefix_ids, " " + text)
                   for x, text in zip(letters, example.choices, strict=False)}  # fmt: skip
        rows.append({"id": example.id, "gold": example.answers[0],
                     "letter": max(by_letter, key=by_letter.__getitem__),
                     "text": max(by_text, key=by_text.__getitem__)})  # fmt: skip
    return rows


def _mean_logprob(scorer: Scorer, prefix_ids: list[int], continuation: str) -> float:
    logp = scorer.continuation_logprobs(prefix_ids, continuation)
    return logp.mean().item() if len(logp) else -math.inf


def option_report(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`letter_report` of each likelihood scoring.

    >>> option_report([{"gold": "A", "letter": "A", "text": "B"}, {"gold": "B", "letter": "A", "text": "B"}])["text"]
    {'predicted': {'B': 2}, 'top_share': 1.0, 'accuracy': 0.5, 'majority_baseline': 0.5}
    """
    from trainer.evals.summary import letter_report

    golds = [r["gold"] for r in rows]
    return {way: letter_report([r[way] for r in rows], golds) for way in ("letter", "text")}
