"""`trainer decide`'s step questions: seeded passes (a resumed run draws what the uninterrupted one would), and the
focus share (issue #40: more of a rare kind of question per step)."""

from __future__ import annotations

import pytest

from sem.evaldata.benchmarks import Example
from trainer.evals.labels import Label
from trainer.train.decide import DecideConfig, batches


def label(n: int, now: bool) -> Label:
    text = f"Which country is the town of T{n} in now?" if now else f"In which year was P{n} born?"
    return Label(Example(f"q{n}", text, ("x",), "known", "world"), "train", [], [], 0.0, 0.0, "known")


LABELS = [label(n, now=n % 10 == 0) for n in range(100)]  # 10 of 100 ask a current value


def test_without_focus_a_pass_draws_every_question_once() -> None:
    config = DecideConfig(questions=10)
    drawn = [lab.example.id for step in range(10) for lab in batches(LABELS, config, step)]
    assert sorted(drawn) == sorted(lab.example.id for lab in LABELS)
    assert batches(LABELS, config, 3) == batches(LABELS, config, 3)  # seeded: a resumed run draws the same


def test_the_focus_share_of_each_step_matches_the_focus() -> None:
    config = DecideConfig(questions=16, focus=r"\bnow\?$", focus_share=0.25)
    for step in range(12):
        batch = batches(LABELS, config, step)
        assert len(batch) == 16
        assert sum(lab.example.question.endswith("now?") for lab in batch) == 4  # 10% of the pool, 25% of the step
        assert len({lab.example.id for lab in batch}) == 16
    # the focus pool is passed through before any of it repeats: two steps, 8 different focus questions
    drawn = [lab for step in range(2) for lab in batches(LABELS, config, step)]
    seen = {lab.example.id for lab in drawn if lab.example.question.endswith("now?")}
    assert len(seen) == 8


def test_focus_options_fail_clearly() -> None:
    with pytest.raises(ValueError, match="needs --focus"):
        DecideConfig(focus_share=0.25)
    with pytest.raises(ValueError, match="not a regex"):
        DecideConfig(focus="(", focus_share=0.25)
    with pytest.raises(ValueError, match="between 0 and 1"):
        DecideConfig(focus="now", focus_share=1.5)
    with pytest.raises(ValueError, match="matches none"):
        batches(LABELS, DecideConfig(focus="never asked", focus_share=0.5), 0)
