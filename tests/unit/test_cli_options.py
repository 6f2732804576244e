"""The options several `trainer` commands share, and the refusals they share: through the real CLI (typer's runner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from trainer.cli import app
from trainer.commands.options import policies_or_fail, read_labels_or_fail
from trainer.train.decide import DecideConfig

LABEL = {"example": {"id": "q1", "question": "Who?", "answers": ["Ann"], "kind": "known", "source": "world"},
         "split": "dev", "closed": ["Ann"], "searched": ["Ann"], "p_closed": 1.0, "p_search": 1.0,
         "klass": "known"}  # fmt: skip


def test_a_missing_labels_file_is_refused_the_same_way_by_every_command(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    for command in (["sft"], ["decide"], ["calibrate"], ["eval-gate"]):
        # wide enough that rich's error box does not cut the long temporary path (a terminal's 80 columns did)
        result = CliRunner(env={"COLUMNS": "400"}).invoke(app, [*command, "--labels", str(missing)])
        assert result.exit_code == 2, (command, result.output)
        said = " ".join(result.output.split())
        assert "--labels" in said and "does not exist" in said and "trainer label" in said, (command, said)


def test_labels_without_the_split_asked_for_are_refused(tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps(LABEL) + "\n")
    assert [lab.example.id for lab in read_labels_or_fail(labels, "dev")] == ["q1"]
    with pytest.raises(typer.BadParameter, match="no train question"):
        read_labels_or_fail(labels, "train")
    result = CliRunner().invoke(app, ["sft", "--labels", str(labels)])  # sft trains on the train split: none here
    assert result.exit_code == 2 and "no train question" in " ".join(result.output.split())


def test_policies_are_checked_against_what_the_command_knows() -> None:
    assert policies_or_fail(" never, auto ,", {"never", "auto", "always"}) == ["never", "auto"]
    with pytest.raises(typer.BadParameter, match="sometimes"):
        policies_or_fail("never,sometimes", {"never", "auto"})
    with pytest.raises(typer.BadParameter, match="unknown policies"):
        policies_or_fail(" , ", {"never"})


def test_the_decide_recipe_refuses_a_choice_it_does_not_have() -> None:
    with pytest.raises(ValueError, match="--credit 'nope'"):
        DecideConfig(credit="nope")
    with pytest.raises(ValueError, match="--engine 'tpu'"):
        DecideConfig(engine="tpu")
    result = CliRunner().invoke(app, ["decide", "--credit", "nope"])
    assert result.exit_code == 2 and "two_action, plain, brier" in " ".join(result.output.split())


def test_every_command_that_reads_labels_takes_the_option() -> None:
    for command in ("sft", "train", "decide", "calibrate", "eval-gate"):
        result = CliRunner().invoke(app, [command, "--help"], terminal_width=200)
        assert result.exit_code == 0 and "--labels" in result.output, command
