"""Rewards and scoring, branch by branch, on hand-built trace columns."""

from __future__ import annotations

import math
import pickle

import pytest

from sem import scoring
from trainer.train.rewards import EMReward, IKEAReward, Metric, OTCReward, SEMReward, get_reward, otc_coefficient


def cols(answers, searches, formats=None, golds=None, source="nq_open", choices=None):
    n = len(answers)
    return {
        "answers": golds or [["Paris"]] * n,
        "trace_answers": answers,
        "search_count": searches,
        "follows_template": formats or [True] * n,
        "source": [source] * n,
        "choices": choices or [[]] * n,
    }


@pytest.mark.parametrize(
    ("answers", "searches", "fmt", "expected"),
    [
        (["Paris"], 0, True, 1.0),  # knew it, did not search
        (["Paris", "Paris"], 1, True, 0.0),  # knew it, searched anyway: a redundant search earns nothing
        (["Rome", "Paris"], 1, True, 1.0),  # wrong first, searched, right after
        (["Rome", "Rome"], 1, True, 0.0),  # wrong first, searched, still wrong
        (["Rome"], 0, True, 0.0),  # wrong and did not search
        (["Rome"], 1, True, 0.0),  # searched but no post-search answer: not a valid search
        (["Paris"], 0, False, 0.0),  # out of template
        ([], 0, True, 0.0),  # no answer at all
        (["Rome", "Paris city"], 1, True, 2 * (0.5 * 1) / 1.5),  # partial F1 after search
    ],
)
def test_sem_reward(answers, searches, fmt, expected) -> None:
    (r,) = SEMReward(tau=0.8)(["c"], **cols([answers], [searches], [fmt]))
    assert math.isclose(r, expected, rel_tol=1e-6)


def test_sem_threshold_decides_what_counts_as_known() -> None:
    c = cols([["Paris city"]], [0])  # F1 = 0.667
    assert SEMReward(tau=0.5)(["c"], **c) == [pytest.approx(2 / 3)]
    assert SEMReward(tau=0.8)(["c"], **c) == [0.0]


@pytest.mark.parametrize(
    ("answers", "searches", "fmt", "expected"),
    [
        (["Paris"], 0, True, 1.6),
        (["Rome", "Paris"], 1, True, 1.4),
        (["Rome", "Rome", "Paris"], 2, True, 1.2),
        (["x", "y", "z", "Paris"], 3, True, 1.0),
        (["Rome", "Rome"], 1, True, 0.05),
        (["Rome"], 0, True, 0.0),
        (["Paris"], 0, False, -1.0),
    ],
)
def test_ikea_reward(answers, searches, fmt, expected) -> None:
    assert IKEAReward()(["c"], **cols([answers], [searches], [fmt])) == [pytest.approx(expected)]


def test_em_reward_ignores_searches_and_format() -> None:
    c = cols([["Rome", "paris!"], ["Paris city"]], [3, 0], [False, True])
    assert EMReward()(["a", "b"], **c) == [1.0, 0.0]


def test_otc_scales_by_the_groups_fewest_correct_searches() -> None:
    prompts = ["q1"] * 3 + ["q2"] * 2
    c = cols([["Paris"], ["Paris"], ["Rome"], ["Rome"], ["Rome"]], [1, 3, 0, 2, 0])
    rewards = OTCReward(EMReward())(["c"] * 5, prompts=prompts, **c)
    assert rewards[0] == pytest.approx(1.0)  # the fewest searches among correct ones
    assert rewards[1] == pytest.approx(math.sin((2 * 1 * 3 / 4) * math.pi / 2))  # more searches, less reward
    assert rewards[2:] == [0.0, 0.0, 0.0]  # wrong answers earn nothing whatever their searches


def test_otc_coefficient_edges() -> None:
    assert otc_coefficient(3, None) == 1.0
    assert otc_coefficient(0, 0) == 1.0
    assert otc_coefficient(2, 0) < otc_coefficient(1, 0) < 1.0


def test_multiple_choice_and_gsm8k_scoring() -> None:
    mc = cols([["The answer is B."], ["C"]], [0, 0], golds=[["B"], ["B"]], source="mmlu",
              choices=[["w", "x", "y", "z"]] * 2)  # fmt: skip
    assert SEMReward()(["a", "b"], **mc) == [1.0, 0.0]
    gsm = cols([["She has 1,200 apples"]], [0], golds=[["1200"]], source="gsm8k")
    assert SEMReward()(["a"], **gsm) == [1.0]


def test_metrics_and_lookup() -> None:
    c = cols([["Paris"], ["Rome", "x"]], [0, 2], [True, False])
    assert Metric("searches")(["a", "b"], **c) == [0.0, 2.0]
    assert Metric("format")(["a", "b"], **c) == [1.0, 0.0]
    assert Metric("answer_f1")(["a", "b"], **c) == [1.0, 0.0]
    assert get_reward("sem", tau=0.5).tau == 0.5
    assert get_reward("trainer.train.rewards:EMReward") is EMReward
    with pytest.raises(ValueError, match="choose one of"):
        get_reward("nope")


def test_rewards_are_picklable_and_named() -> None:
    """A clone (TRL may pickle rewards into workers) is named and scores as the original, settings included: a tau of
    0.6 counts "Paris city" (F1 0.67) as known, the default 0.8 would not."""
    prompts = ["q1"] * 3 + ["q2"] * 2
    c = cols([["Paris city"], ["Rome", "Paris"], ["Rome"], ["Paris"], ["Paris", "Paris"]], [0, 1, 0, 0, 1])
    rewards = (SEMReward(0.6), IKEAReward(0.6), EMReward(), OTCReward(SEMReward(0.6), threshold=0.6),
               Metric("searches"))  # fmt: skip
    for reward in rewards:
        clone = pickle.loads(pickle.dumps(reward))
        assert clone is not reward and clone.__name__ == reward.__name__
        expected = reward(["c"] * 5, prompts=prompts, **c)
        assert len(set(expected)) > 1  # outcomes that differ, so a clone that scores otherwise is seen
        assert clone(["c"] * 5, prompts=prompts, **c) == expected
    assert SEMReward(0.6)(["c"], **cols([["Paris city"]], [0])) == [pytest.approx(2 / 3)]


def test_missing_column_is_a_precise_error() -> None:
    with pytest.raises(ValueError, match="trace_answers"):
        SEMReward()(["c"], answers=[["x"]])


@pytest.mark.parametrize(
    ("pred", "golds", "em", "f1"),
    [
        ("The Eiffel Tower", ["eiffel tower"], 1.0, 1.0),
        ("Eiffel", ["Eiffel Tower"], 0.0, 2 / 3),
        ("", ["x"], 0.0, 0.0),
        ("Paris", ["London", "paris"], 1.0, 1.0),
    ],
)
def test_em_and_f1(pred, golds, em, f1) -> None:
    assert scoring.exact_match(pred, golds) == em
    assert scoring.f1(pred, golds) == pytest.approx(f1)
