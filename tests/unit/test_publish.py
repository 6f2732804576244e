"""Committed results change one way: every pipeline target of the Makefile writes under runs/ (git-ignored), and
`trainer publish-run` copies a judged run into results/ with the committed rule that judged it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainer.evals.ledger import SplitError
from trainer.evals.publish import PublishError, publish_run

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ["tuned-model", "eval-model", "eval-gate", "world"]


@pytest.mark.parametrize("target", PIPELINES)
def test_pipeline_targets_write_under_runs_only(target: str) -> None:
    """`make -n` prints what the target would run: every --out under runs/, results/ named only as a rule to read."""
    printed = subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    commands = printed.replace("\\\n", " ")
    outs = re.findall(r"--out (\S+)", commands)
    assert outs and all(o.startswith("runs/") for o in outs), outs
    named = re.findall(r"(--[\w-]+)? ?(results/\S*)", commands)
    assert all(flag == "--rule" for flag, _ in named), named
    assert "trainer promote" not in commands or "--dry-run" in commands  # publishing is promote-model's alone
    assert "--final" not in commands  # the default split is dev: no ledger entry either


def test_runs_is_git_ignored() -> None:
    ignored = subprocess.run(["git", "check-ignore", "-q", "runs/world/eval/report.json"], cwd=ROOT, check=False)
    assert ignored.returncode == 0


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)  # fmt: skip


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with a committed rule and a judged run under runs/ (an eval-gate folder and its labels' corpus)."""
    git(tmp_path, "init", "-q")
    (tmp_path / "rule.md").write_text("the trained gate wins if it searches less at no loss\n")
    git(tmp_path, "add", "rule.md")
    git(tmp_path, "commit", "-qm", "rule")
    run = tmp_path / "runs" / "eval"
    (run / "sft" / "labels").mkdir(parents=True)
    (run / "sft" / "gate.json").write_text(json.dumps({"split": "dev", "rows": []}))
    (run / "sft" / "outcomes.jsonl").write_text("")
    (run / "sft" / "labels" / "corpus.jsonl").write_text("{}\n")
    (run / "report.json").write_text("{}\n")
    return tmp_path


def test_publishing_copies_the_run_with_its_rule_and_refuses_to_overwrite(repo: Path) -> None:
    run, to, rule = repo / "runs" / "eval", repo / "results" / "world", repo / "rule.md"
    provenance = publish_run(run, to, rule)
    assert sorted(provenance["files"]) == ["report.json", "sft/gate.json", "sft/outcomes.jsonl"]  # no corpus
    assert (to / "rule.md").read_text() == rule.read_text() and (to / "sft" / "gate.json").is_file()
    assert json.loads((to / "published.json").read_text())["rule"]["commit"] == provenance["rule"]["commit"]
    with pytest.raises(PublishError, match=r"already in .*--replace"):
        publish_run(run, to, rule)
    (run / "report.json").write_text('{"again": true}\n')
    publish_run(run, to, rule, replace=True)
    assert json.loads((to / "report.json").read_text()) == {"again": True}


def test_publishing_needs_a_judged_run_and_a_committed_rule(repo: Path) -> None:
    run, rule = repo / "runs" / "eval", repo / "rule.md"
    with pytest.raises(PublishError, match="not a folder"):
        publish_run(repo / "runs" / "missing", repo / "results" / "x", rule)
    (repo / "runs" / "empty").mkdir()
    with pytest.raises(PublishError, match="holds no judged run"):
        publish_run(repo / "runs" / "empty", repo / "results" / "x", rule)
    rule.write_text("changed after the results\n")
    with pytest.raises(SplitError, match="not committed"):
        publish_run(run, repo / "results" / "x", rule)
    assert not (repo / "results").exists()


def test_publish_run_command_names_the_option_to_fix(repo: Path) -> None:
    from trainer.cli import app

    args = ["publish-run", "--run", str(repo / "runs" / "eval"), "--to", str(repo / "results" / "w")]
    done = CliRunner().invoke(app, [*args, "--rule", str(repo / "rule.md")])
    assert done.exit_code == 0 and "commit them" in done.output, done.output
    refused = CliRunner().invoke(app, [*args, "--rule", str(repo / "nope.md")])
    said = " ".join(refused.output.replace("│", " ").split())  # the error box wraps its lines
    assert refused.exit_code == 2 and "Invalid value for --rule" in said, said
    assert "does not exist: write it and commit it" in said
