"""A trained gate's own score: how likely the model was to search right after its first answer.

`auto` has no threshold to sweep, but the decision it samples greedily is a probability: P(`<search>` opens next |
the prompt and its first answer), or after a confidence note P(anything but the end of the turn). Read back by
teacher forcing, it ranks questions the way the gate leans, so a trained gate gets an AUROC beside the `confidence`
gate's (EVALUATION.md: does it search more where it does not know?).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from sem import protocol
from trainer.evals.likelihood import Scorer

# How a search call may follow the closed answer (the teacher traces write a line break).
OPENERS = ("\n" + protocol.SEARCH_OPEN, " " + protocol.SEARCH_OPEN, protocol.SEARCH_OPEN)


def first_turn(text: str) -> str | None:
    """The first generated turn up to its closed answer; None when it wrote none (nothing to score after).

    >>> first_turn("<answer>Paris</answer>\\n<search> q </search>"), first_turn("<search> q </search>")
    ('<answer>Paris</answer>', None)
    """
    close = text.find(protocol.ANSWER_CLOSE)
    return None if close < 0 else text[: close + len(protocol.ANSWER_CLOSE)]


def search_probabilities(scorer: Scorer, items: Sequence[tuple[str, str]], note: bool = False) -> list[float]:
    """P(search) after each (question, first turn), as the loop serves the decision: without a note, P(a search
    call opens next), summed over the ways to open it; after a `confidence_note`, 1 - P(end of turn), the one
    token that decides there (`sem.loop`, as `trainer decide` trains it)."""
    out = []
    for question, turn in items:
        prompt = protocol.render_prompt(scorer.tokenizer, protocol.build_messages(question))
        prefix = scorer.encode(prompt + turn)
        if note:
            out.append(1.0 - math.exp(scorer.next_token_logprobs(prefix)[scorer.tokenizer.eos_token_id].item()))
        else:
            out.append(sum(math.exp(scorer.continuation_logprobs(prefix, o).sum().item()) for o in OPENERS))
    return out
