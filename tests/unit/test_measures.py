"""The evaluation core (#32): the sweep replays what the loop does, intervals say "too few" under 10 questions,
AUROC and paired differences get bootstrap intervals, and the test split runs only as a logged final report."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sem.loop import SearchRecord, Trace
from tests.unit.test_gate import label, outcome
from trainer.evals.labels import HELPED, KNOWN, NEITHER
from trainer.evals.ledger import SplitError, check_split, committed_rule, read_ledger, record
from trainer.evals.measures import MIN_COUNT, TOO_FEW, auroc_interval, paired_difference, rate
from trainer.evals.runs import confidence_gate, confidence_sweep, decision_sweep
from trainer.evals.summary import compare, summarise


def test_the_sweep_never_searches_an_answer_the_loop_never_scored() -> None:
    """The base at t = 0.5 was counted with 49 searches where the loop made 17: answers that hit the token cap have
    no confidence, and the loop stops there. The sweep now replays that."""
    capped = outcome(0, "confidence", HELPED, False, 0, None)  # token cap: no score, no search at t = 1.0
    capped.extra.update(gate="undecided", first_right=False)
    unsure = outcome(1, "confidence", HELPED, True, 1, 0.2)
    unsure.extra.update(gate="decided", first_right=False)
    sweep = {r["threshold"]: r for r in confidence_sweep([capped, unsure], [0.1, 0.5, 1.0])}
    assert sweep[0.5]["searches_per_question"] == 0.5  # only the scored unsure one; the old sweep said 1.0
    assert sweep[1.0]["searches_per_question"] == 0.5
    assert sweep[0.1]["searches_per_question"] == 0.0
    legacy = outcome(0, "confidence", HELPED, False, 0, None)  # saved before `gate` was recorded
    legacy.extra["first_right"] = False
    assert confidence_sweep([legacy], [0.5])[0]["searches_per_question"] == 0.0


def test_the_cut_sweep_replays_read_decisions_and_keeps_the_rest_as_they_went() -> None:
    """`calibrate --decision` replays every cut on P(search); an answer whose decision was never read (the first
    answer never closed) keeps what its run did, searched or not."""
    sure = outcome(0, "auto", KNOWN, False, 1)
    sure.extra.update(decision_p_search=0.15, first_right=True)
    unsure = outcome(1, "auto", HELPED, True, 1)
    unsure.extra.update(decision_p_search=0.6, first_right=False)
    unread = outcome(2, "auto", HELPED, True, 1)
    unread.extra["first_right"] = False
    sweep = {r["threshold"]: r for r in decision_sweep([sure, unsure, unread], [0.1, 0.5, 0.7])}
    assert [sweep[t]["searches_per_question"] for t in (0.1, 0.5, 0.7)] == [1.0, 0.6667, 0.3333]
    assert sweep[0.5]["accuracy"] == 1.0  # the sure one keeps its right first answer, the unsure one searches
    assert sweep[0.1]["accuracy"] == 0.6667 and sweep[0.7]["accuracy"] == 0.6667


def test_the_gate_is_read_off_the_trace() -> None:
    def trace(confidence: float | None, *searches: bool) -> Trace:
        t = Trace("r", "p", [1])
        t.confidence = confidence
        t.searches = [SearchRecord("q", [], False, 1.0, forced=f) for f in searches]
        return t

    assert confidence_gate(trace(0.3, True)) == "decided"  # scored, searched by the threshold
    assert confidence_gate(trace(0.9)) == "decided"  # scored, sure enough: no search
    assert confidence_gate(trace(None)) == "undecided"  # token cap
    assert confidence_gate(trace(None, False)) == "model"  # the model searched on its own


def test_rates_under_ten_questions_are_too_few() -> None:
    assert rate([True] * (MIN_COUNT - 1))["ci"] == TOO_FEW
    big = rate([True, False] * MIN_COUNT)
    low, high = big["ci"]
    assert big["n"] == 2 * MIN_COUNT and low < big["value"] < high
    assert rate([]) == {"value": None, "n": 0, "ci": None}


def test_auroc_interval_brackets_a_clear_signal_and_says_too_few() -> None:
    scores = [0.9] * 12 + [0.1] * 12
    wrong = [True] * 10 + [False] * 2 + [True] * 2 + [False] * 10
    low, high = auroc_interval(scores, wrong)
    assert 0.5 < low <= high <= 1.0
    assert auroc_interval(scores[:14], wrong[:14]) == TOO_FEW  # 2 closed-book-right questions
    assert auroc_interval([0.5, 0.4], [True, True]) is None  # one class only


def test_paired_difference_is_narrower_than_two_separate_intervals() -> None:
    """Two gates that differ on 4 of 40 questions: each alone is a wide interval around ~0.5, their paired
    difference a tight one around 0.1."""
    a = {i: float(i % 2 == 0 or i < 4) for i in range(40)}
    b = {i: float(i % 2 == 0) for i in range(40)}
    diff = paired_difference(a, b)
    assert diff["difference"] == 0.05 and diff["n"] == 40
    low, high = diff["ci"]
    alone = rate([bool(v) for v in a.values()])["ci"]
    assert high - low < alone[1] - alone[0]
    assert paired_difference({1: 1.0}, {2: 1.0})["n"] == 0  # no shared question: nothing to compare


def test_summary_rows_carry_counts_intervals_and_comparisons() -> None:
    labels = [label(i, [KNOWN, HELPED, NEITHER][i % 3], 1.0 if i % 3 == 0 else 0.0) for i in range(30)]
    runs = [outcome(i, "never", labels[i].klass, labels[i].klass == KNOWN, 0) for i in range(30)]
    runs += [outcome(i, "always", labels[i].klass, labels[i].klass != NEITHER, 1) for i in range(30)]
    rows = {r["policy"]: r for r in summarise(runs, labels)}
    assert rows["always"]["over_search"] == 1.0 and rows["always"]["over_search_n"] == 10
    assert isinstance(rows["always"]["accuracy_ci"], tuple)
    diff = compare(runs, "always", "never")
    assert diff["accuracy"]["difference"] == pytest.approx(0.333, abs=1e-3)
    assert diff["searches_per_question"]["difference"] == 1.0


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)  # fmt: skip


def test_the_test_split_needs_final_and_a_committed_unchanged_rule(tmp_path: Path) -> None:
    assert check_split("dev", final=False, rule=None) is None
    with pytest.raises(SplitError, match="frozen"):
        check_split("test", final=False, rule=None)
    with pytest.raises(SplitError, match="--rule"):
        check_split("test", final=True, rule=None)
    with pytest.raises(SplitError, match="test split only"):
        check_split("dev", final=True, rule=None)
    git(tmp_path, "init", "-q")
    rule = tmp_path / "rule.md"
    rule.write_text("The winner: more targets met than the default, F1 no lower.\n")
    with pytest.raises(SplitError, match="not committed"):
        committed_rule(rule)
    git(tmp_path, "add", "rule.md")
    git(tmp_path, "commit", "-qm", "rule")
    found = check_split("test", final=True, rule=rule)
    assert found is not None and len(found.commit) == 40
    rule.write_text("The winner: whatever did best.\n")  # changed after the fact
    with pytest.raises(SplitError, match="not committed"):
        committed_rule(rule)


def committed_repo(repo: Path) -> Path:
    """A checkout with a committed rule, a tracked file and runs/ ignored, as the project's is; returns the rule."""
    git(repo, "init", "-q")
    (repo / "rule.md").write_text("rule\n")
    (repo / "code.py").write_text("x = 1\n")
    (repo / ".gitignore").write_text("runs/\n")
    git(repo, "add", "rule.md", "code.py", ".gitignore")
    git(repo, "commit", "-qm", "rule")
    return repo / "rule.md"


def head(repo: Path) -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()


def test_a_final_run_is_appended_to_the_ledger_with_each_rates_count(tmp_path: Path) -> None:
    rule = committed_repo(tmp_path)
    ledger = tmp_path / "ledger.jsonl"  # untracked, as a first entry's ledger is
    rows = [{"policy": "auto", "questions": 84, "accuracy": 0.1, "searches_per_question": 0.5, "over_search": 0.25,
             "over_search_n": 40, "under_search": 0.5, "under_search_n": 20, "auroc": 0.7, "f1": 0.2}]  # fmt: skip
    for _ in range(2):
        record(ledger, committed_rule(rule), model="runs/sft/final", policies=["auto"], labels="l", out="o",
               rows=rows)  # fmt: skip
    entries = read_ledger(ledger)
    assert len(entries) == 2 and entries[0]["commit"] == head(tmp_path) and json.dumps(entries[0])
    assert entries[0]["rule"]["path"].endswith("rule.md") and entries[0]["model"] == "runs/sft/final"
    results = entries[0]["results"]["auto"]
    assert list(results) == ["questions", "accuracy", "searches_per_question", "over_search", "over_search_n",
                             "under_search", "under_search_n", "auroc"]  # fmt: skip
    assert (results["over_search"], results["over_search_n"], results["under_search_n"]) == (0.25, 40, 20)


def test_the_ledger_refuses_a_dirty_tree_before_the_run_and_when_recording(tmp_path: Path) -> None:
    rule = committed_repo(tmp_path)
    ledger = tmp_path / "ledger.jsonl"
    (tmp_path / "runs" / "gate").mkdir(parents=True)
    (tmp_path / "runs" / "gate" / "gate.json").write_text("{}")  # ignored output
    (tmp_path / "notes.txt").write_text("untracked\n")  # untracked: not the code that ran
    assert check_split("test", final=True, rule=rule) is not None
    (tmp_path / "code.py").write_text("x = 2\n")  # a tracked file changed: the commit is not the code that ran
    with pytest.raises(SplitError, match=r"changes not committed \(code.py\): commit them first"):
        check_split("test", final=True, rule=rule)
    committed = committed_rule(rule)  # the rule itself is unchanged
    with pytest.raises(SplitError, match="commit them first"):
        record(ledger, committed, model="m", policies=["auto"], labels="l", out="o", rows=[])
    assert not ledger.exists()
    git(tmp_path, "commit", "-qam", "code")
    entry = record(ledger, committed, model="m", policies=["auto"], labels="l", out="o", rows=[])
    assert entry["commit"] == head(tmp_path) and len(read_ledger(ledger)) == 1


def test_the_ledger_refuses_a_temporary_merge_for_a_name(tmp_path: Path) -> None:
    rule = committed_repo(tmp_path)
    ledger = tmp_path / "ledger.jsonl"
    with pytest.raises(SplitError, match="adapter's own path"):
        record(ledger, committed_rule(rule), model="/tmp/sem-merged-cua15w0u", policies=["auto"], labels="l",
               out="o", rows=[])  # fmt: skip
    assert not ledger.exists()


def test_eval_gate_final_logs_the_adapter_not_its_merge(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model name comes from --model; the engine loads `servable`'s temporary merge (stubbed here)."""
    from contextlib import contextmanager

    import trainer.commands.evaluation as evaluation
    from tests.unit.test_gaterun import answers, labels
    from trainer.cli import app
    from trainer.evals.gaterun import GateRun
    from trainer.evals.labels import write_labels

    @contextmanager
    def merged(model: str | None, engine: str, corpus: Path):  # what gate_loop yields: loop, search loop, model
        yield None, None, "/tmp/sem-merged-x"

    repo = tmp_path / "repo"
    repo.mkdir()
    rule = committed_repo(repo)
    tests = labels()
    for lab in tests:
        lab.split = "test"
    write_labels(tests, tmp_path / "labels.jsonl")
    monkeypatch.setattr(evaluation, "gate_loop", merged)
    monkeypatch.setattr(evaluation, "labels_corpus", lambda labels_file: tmp_path / "corpus.jsonl")
    monkeypatch.setattr(evaluation, "_answer", lambda *args: (answers("never", 0) + answers("always", 1), None))
    monkeypatch.setattr("sem.gate.resolve_threshold", lambda *args: 0.5)
    ledger = repo / "ledger.jsonl"
    args = ["eval-gate", "--labels", str(tmp_path / "labels.jsonl"), "--split", "test", "--final", "--rule",
            str(rule), "--ledger", str(ledger), "--model", "runs/sft/final", "--policies", "never,always", "--out",
            str(repo / "runs" / "gate")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    (entry,) = read_ledger(ledger)
    assert entry["model"] == "runs/sft/final" and entry["commit"] == head(repo)
    assert entry["results"]["always"]["over_search_n"] == 2 and GateRun.read(repo / "runs" / "gate").split == "test"
    (repo / "code.py").write_text("x = 3\n")
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "commit them first" in again.output, again.output
    assert len(read_ledger(ledger)) == 1


def test_eval_gate_refuses_the_test_split_before_loading_anything(tmp_path: Path) -> None:
    from trainer.cli import app

    labels = tmp_path / "labels.jsonl"
    labels.write_text("")
    result = CliRunner().invoke(app, ["eval-gate", "--labels", str(labels), "--split", "test"])
    assert result.exit_code == 2 and "frozen" in result.output


def test_readme_gate_table_agrees_with_the_result_files() -> None:
    """README's table is generated (`trainer readme-table`); a hand edit or a new result without it fails here."""
    from trainer.evals.report import gate_table, readme_block

    root = Path(__file__).resolve().parents[2]
    assert readme_block((root / "README.md").read_text()) == gate_table(root)


def eval_gate_run(folder: Path, policy: str, right: list[bool], searches: list[int]) -> Path:
    """An eval-gate output folder as `trainer eval-gate` writes it (gate.json, outcomes.jsonl)."""
    from dataclasses import asdict

    folder.mkdir(parents=True)
    (folder / "gate.json").write_text(json.dumps({"split": "dev", "rows": []}))
    rows = [outcome(i, policy, NEITHER, r, s) for i, (r, s) in enumerate(zip(right, searches, strict=True))]
    (folder / "outcomes.jsonl").write_text("".join(json.dumps(asdict(o)) + "\n" for o in rows))
    return folder


def test_promote_publishes_only_a_candidate_that_wins_by_the_committed_rule(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from trainer.cli import app

    git(tmp_path, "init", "-q")
    rule = tmp_path / "rule.md"
    rule.write_text("more accurate, or fewer searches at no loss\n")
    git(tmp_path, "add", "rule.md")
    git(tmp_path, "commit", "-qm", "rule")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    save_file({"w": torch.zeros(2)}, adapter / "adapter_model.safetensors")
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 8}))
    right = [i % 2 == 0 for i in range(40)]
    current = eval_gate_run(tmp_path / "current", "auto", right, [1] * 40)
    same = eval_gate_run(tmp_path / "same", "auto", right, [1] * 40)
    fewer = eval_gate_run(tmp_path / "fewer", "auto", right, [0] * 20 + [1] * 20)
    out = tmp_path / "published"
    common = ["promote", "--adapter", str(adapter), "--current", str(current), "--rule", str(rule), "--out", str(out)]
    stays = CliRunner().invoke(app, [*common, "--candidate", str(same)])
    assert stays.exit_code == 0 and "stays:" in stays.output and not out.exists()
    wins = CliRunner().invoke(app, [*common, "--candidate", str(fewer)])
    assert wins.exit_code == 0 and "WINS: searches less" in wins.output, wins.output
    card = (out / "README.md").read_text()
    assert "## Provenance" in card and "rule.md" in card and "searches less" in card
    assert (out / "adapter_model.safetensors").is_file()
    rule.write_text("changed after the fact\n")
    refused = CliRunner().invoke(app, [*common, "--candidate", str(fewer)])
    assert refused.exit_code == 2 and "not committed" in refused.output
