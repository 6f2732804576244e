"""The decide runs' curves side by side (`trainer decide-curves`): every committed run's dev points, a line per run,
and a bad `--run` that says what to fix."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from trainer.cli import app

ROOT = Path(__file__).resolve().parents[2]


def history(folder: Path, aurocs: list[float]) -> Path:
    folder.mkdir(parents=True)
    rows = [{"step": 20 * i, "dev_questions": 120, "dev_auroc": a, "dev_searches": 0.5, "dev_over_search": 0.1,
             "dev_under_search": 0.2} for i, a in enumerate(aurocs)]  # fmt: skip
    rows.insert(1, {"step": 1, "reward": 0.5})  # a training step without a dev point: not a curve point
    (folder / "history.json").write_text(json.dumps(rows))
    return folder


def test_curves_of_several_runs_are_tabled_and_plotted(tmp_path: Path) -> None:
    a, b = history(tmp_path / "a", [0.6, 0.9]), history(tmp_path / "b", [0.6, 0.7, 0.65])
    committed = ROOT / "results/world/decide-note-full"
    out = tmp_path / "cmp" / "curves.png"
    result = CliRunner().invoke(app, ["decide-curves", "--run", f"a={a}", "--run", f"b={b}", "--run",
                                      f"full={committed}", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    table = out.with_suffix(".md").read_text()
    assert out.stat().st_size > 10_000  # a real plot
    assert "| a | 20 | 0.9 |" in table and "| b | 40 | 0.65 |" in table and "| full | 40 | 0.956 |" in table
    assert "| a | 1 |" not in table


def test_a_run_without_a_history_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["decide-curves", "--run", f"x={tmp_path}", "--out", str(tmp_path / "c.png")])
    assert result.exit_code == 2 and "history.json" in result.output


def test_a_dev_point_scores_the_sem_reward_as_served() -> None:
    from trainer.evals.curve import curve_point
    from trainer.train.decide import DevAnswer

    answers = [
        DevAnswer("known", 0.1, first_wrong=False, searched=False, right=True, answer="a"),  # earns 1
        DevAnswer("redundant", 0.9, first_wrong=False, searched=True, right=True, answer="a"),  # right, earns 0
        DevAnswer("needed", 0.9, first_wrong=True, searched=True, right=True, answer="a"),  # earns 1
        DevAnswer("missed", 0.2, first_wrong=True, searched=False, right=False, answer="b"),  # earns 0
    ]
    point = curve_point(answers)
    assert point["accuracy"] == 0.75 and point["sem"] == 0.5
    assert point["read"] is None  # no reading measured


def test_a_dev_point_reads_the_answer_after_a_search_apart_from_the_decision() -> None:
    """`read`: right after a search from every first answer (a branch where the decision stopped), so a fall in
    accuracy can be told apart: the decision's, or the reading's."""
    from trainer.evals.curve import curve_point
    from trainer.train.decide import DevAnswer

    answers = [
        DevAnswer("stopped, its branch read right", 0.1, False, False, True, "a", read_right=True),
        DevAnswer("searched, read wrong", 0.9, True, True, False, "b", read_right=False),
        DevAnswer("searched, read right", 0.9, True, True, True, "a", read_right=True),
        DevAnswer("no first answer", None, True, False, False, "", read_right=None),  # not counted
    ]
    point = curve_point(answers)
    assert point["read"] == 0.6667 and point["accuracy"] == 0.5
