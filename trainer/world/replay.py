"""Replay for `trainer world teach`: the start model's own first turns on real training questions, taught beside the
world's facts so that they do not overwrite how it answers real questions. Taught without it, the model answered 0 of
the 84 real test questions (the base 6), each with a world-like name (results/world/real/).

The turns are the model's own greedy attempts under SEM's prompt, never canned strings: replay holds the model where it
was on real questions (self-distillation), it teaches nothing new there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sem.protocol import ANSWER_CLOSE, SEARCH_CLOSE, build_messages, render_prompt

log = logging.getLogger("trainer.world")

REPLAY_MAX_TOKENS = 64


def first_turn(text: str) -> str:
    """The model's turn up to its first closing answer or search tag (where the search loop stops it), else as
    generated (it ran out of tokens).

    >>> first_turn("<answer>Paris</answer> and more"), first_turn("<search>x</search><result>"), first_turn("Paris")
    ('<answer>Paris</answer>', '<search>x</search>', 'Paris')
    """
    ends = [i + len(tag) for tag in (ANSWER_CLOSE, SEARCH_CLOSE) if (i := text.find(tag)) >= 0]
    return text[: min(ends)] if ends else text


def own_turns(model: Any, tokenizer: Any, questions: Sequence[str], batch_size: int = 16,
              max_new_tokens: int = REPLAY_MAX_TOKENS) -> list[tuple[str, bool]]:  # fmt: skip
    """The model's greedy first turn for each question, rendered as the search loop renders it, and whether it ended
    (its end of turn) before the token limit."""
    import torch
    from tqdm import tqdm

    tokenizer.padding_side = "left"
    model.eval()
    turns = []
    for start in tqdm(range(0, len(questions), batch_size), desc="replay: the model's own turns", unit="batch"):
        chunk = questions[start : start + batch_size]
        prompts = [render_prompt(tokenizer, build_messages(q)) for q in chunk]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        for row in out[:, batch.input_ids.shape[1] :].tolist():
            ended = tokenizer.eos_token_id in row
            text = tokenizer.decode(row[: row.index(tokenizer.eos_token_id)] if ended else row)
            turns.append((first_turn(text), ended))
    model.train()
    tokenizer.padding_side = "right"
    return turns


def replay_texts(path: Path, model: Any, tokenizer: Any, questions: Sequence[str]) -> list[tuple[str, str, bool]]:
    """(question, the model's own turn, is_chat) for every question, generated once and kept in `path` (a resumed
    run replays what the start model wrote, not what the half-taught one would)."""
    if path.exists():
        rows = [json.loads(line) for line in path.open()]
    else:
        turns = own_turns(model, tokenizer, questions)
        rows = [{"question": q, "turn": t, "ended": e} for q, (t, e) in zip(questions, turns, strict=True)]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # a turn cut off by the token limit is not one the loop would act on: not kept
    kept = [r for r in rows if r["ended"] or r["turn"].endswith((ANSWER_CLOSE, SEARCH_CLOSE))]
    log.info("replay: %d real training questions, %d turns kept (%d searches)", len(rows), len(kept),
             sum(r["turn"].endswith(SEARCH_CLOSE) for r in kept))  # fmt: skip
    return [(r["question"], r["turn"], True) for r in kept]
