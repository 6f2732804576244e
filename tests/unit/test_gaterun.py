"""An eval-gate run folder read and written in one place (trainer.evals.gaterun): a written run reads back as it was,
every committed run still loads (and re-serialises byte for byte), and a bad `name=<folder>` says what to fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sem.evaldata.benchmarks import Example
from trainer.evals.gaterun import GATE_FILE, OUTCOMES_FILE, GateRun, GateRunError, named_file, named_run
from trainer.evals.labels import HELPED, KNOWN, NEITHER, Label, write_labels
from trainer.evals.runs import Outcome

ROOT = Path(__file__).resolve().parents[2]
CLASSES = [KNOWN, KNOWN, HELPED, HELPED, NEITHER, NEITHER]


def labels() -> list[Label]:
    return [Label(Example(f"q{i}", f"question {i}?", ("Paris",), "needs_search", "t"), "dev", [], [], 0.0, 0.0, k)
            for i, k in enumerate(CLASSES)]  # fmt: skip


def answers(policy: str, searches: int) -> list[Outcome]:
    """`never` right on known questions, `always` right on known and helped ones; `auto` scored by P(search)."""
    out = []
    for i, klass in enumerate(CLASSES):
        right = klass == KNOWN or (searches > 0 and klass == HELPED)
        extra = {"search_probability": 0.1 if klass == KNOWN else 0.9} if policy == "auto" else {}
        out.append(Outcome(f"q{i}", "t", klass, policy, "a", "a", right, float(right), searches, 10, 1 + searches,
                           0.1, None, extra))  # fmt: skip
    return out


@pytest.fixture
def saved(tmp_path: Path) -> GateRun:
    labs = labels()
    write_labels(labs, tmp_path / "labels.jsonl")
    outcomes = answers("never", 0) + answers("always", 1) + answers("auto", 1)
    run = GateRun.judged(outcomes, labs, split="dev", model="m", labels_file=tmp_path / "labels.jsonl", threshold=0.5)
    run.save(tmp_path / "run", "a title")
    return run


def test_a_saved_run_reads_back_as_it_was_written(saved: GateRun) -> None:
    folder = saved.folder
    assert folder is not None and {p.name for p in folder.iterdir()} == {"gate.json", "gate.md", "gate.png",
                                                                         "outcomes.jsonl"}  # fmt: skip
    back = GateRun.read(folder)
    assert back == saved  # every field, the outcomes (the oracle's included) and the folder
    assert back.policies() == ["never", "always", "auto", "oracle"] and len(back.answers("oracle")) == 6
    assert back.questions == 6 and back.classes["all"] == {KNOWN: 2, HELPED: 2, NEITHER: 2}
    assert back.labels_file == Path(saved.labels or "") and back.labels_file.is_file()
    assert {(c["a"], c["b"]) for c in back.comparisons or []} >= {("auto", "never"), ("auto", "always")}
    assert list(json.loads((folder / GATE_FILE).read_text())) == ["split", "model", "labels", "confidence_threshold",
                                                                   "rows", "classes", "option_likelihood",
                                                                   "comparisons"]  # fmt: skip
    assert "a title (dev, 6 questions; confidence threshold 0.5)" in (folder / "gate.md").read_text()


def test_every_committed_run_loads_and_rewrites_byte_for_byte() -> None:
    """The committed results are read by the same class that writes new runs; one written with every key (the
    current format) comes out of it unchanged, and older ones (fewer keys) still load."""
    folders = sorted(p.parent for p in (ROOT / "results").rglob(GATE_FILE))
    assert len(folders) >= 20
    current = 0
    for folder in folders:
        run = GateRun.read(folder)
        assert run.outcomes and run.split in ("dev", "test"), folder
        text = (folder / GATE_FILE).read_text()
        if len(json.loads(text)) == 8:
            current += 1
            assert run.gate_json() == text, folder
    assert current >= 10


def test_a_folder_without_gate_json_says_so(tmp_path: Path) -> None:
    with pytest.raises(GateRunError, match=r"no gate\.json.*eval-gate --out"):
        GateRun.read(tmp_path)
    (tmp_path / GATE_FILE).write_text(json.dumps({"split": "dev"}))
    with pytest.raises(GateRunError, match=r"no outcomes\.jsonl"):
        GateRun.read(tmp_path)
    (tmp_path / OUTCOMES_FILE).write_text('{"id": "q0", "nonsense": 1}\n')
    with pytest.raises(GateRunError, match="not a readable eval-gate run"):
        GateRun.read(tmp_path)
    assert issubclass(GateRunError, ValueError)


@pytest.mark.parametrize("item", ["no-equals-sign", "=runs/x", "name="])
def test_a_bad_name_path_option_names_the_expected_form(item: str) -> None:
    with pytest.raises(typer.BadParameter, match=r"expected name=<a `trainer eval-gate --out` folder>"):
        named_run(item)
    with pytest.raises(typer.BadParameter, match=r"expected name=<an existing file>"):
        named_file(item)


def test_name_path_options_read_the_folder_once_at_parse_time(saved: GateRun, tmp_path: Path) -> None:
    item = named_run(f"tuned={saved.folder}")
    assert item.name == "tuned" and item.run == saved
    with pytest.raises(typer.BadParameter, match=r"'x=.*': .* holds no eval-gate run \(no gate\.json\)"):
        named_run(f"x={tmp_path}")
    with pytest.raises(typer.BadParameter, match="is not a file"):
        named_file(f"base={tmp_path / 'results.json'}")


def test_the_commands_refuse_a_bad_run_before_doing_anything(tmp_path: Path) -> None:
    from trainer.cli import app

    for args in (["gate-table", "--run", "base"], ["world", "report", "--run", f"taught={tmp_path}"]):
        result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
        assert result.exit_code == 2 and "--run" in result.output, result.output
        assert "expected name=" in result.output or "no gate.json" in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_eval_gate_writes_a_run_that_reads_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command is parse, answer, judge, save: with the model's answers stubbed, what it writes is a GateRun."""
    from contextlib import contextmanager

    import trainer.commands.evaluation as evaluation
    from trainer.cli import app

    @contextmanager
    def no_model(model: str | None, engine: str, corpus: Path):  # what gate_loop yields: loop, search loop, model
        yield None, None, "/tmp/sem-merged-x"

    write_labels(labels(), tmp_path / "labels.jsonl")
    monkeypatch.setattr(evaluation, "gate_loop", no_model)
    monkeypatch.setattr(evaluation, "labels_corpus", lambda labels_file: tmp_path / "corpus.jsonl")
    monkeypatch.setattr(evaluation, "_answer", lambda *args: (answers("never", 0) + answers("auto", 1), None))
    monkeypatch.setattr("sem.gate.resolve_threshold", lambda *args: 0.5)
    args = ["eval-gate", "--labels", str(tmp_path / "labels.jsonl"), "--model", "runs/sft/final", "--policies",
            "never,auto", "--out", str(tmp_path / "run")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run = GateRun.read(tmp_path / "run")
    assert run.model == "runs/sft/final"  # the adapter's own path, not the temporary merge
    assert run.policies() == ["never", "auto"] and run.confidence_threshold == 0.5 and run.split == "dev"
    assert [(c["a"], c["b"]) for c in run.comparisons or []] == [("auto", "never")]
