"""A tiny fictional world through the whole pipeline with the real model: build -> teach -> label -> SFT -> one
GRPO step -> eval-gate. What is asserted follows from the data: a taught fact is answered closed-book, the classes
come from the model's own samples, and the world's splits (by entity) reach every step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import invoke_trainer
from trainer.evals.labels import classify, is_right, read_labels
from trainer.world.schema import load_world

invoke = invoke_trainer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, settings) -> Path:
    root = tmp_path_factory.mktemp("world")
    invoke("world", "build", "--out", str(root / "world"), "--scale", "0.03", "--seed", "1")
    # many epochs at a high rate: a handful of facts, learnt by heart in about a minute; a few real questions replayed
    invoke("world", "teach", "--world", str(root / "world"), "--out", str(root / "teach"), "--epochs", "10",
           "--learning-rate", "1e-3", "--batch-size", "16", "--probe-every", "0", "--replay-per-set", "2")  # fmt: skip
    invoke("world", "label", "--world", str(root / "world"), "--model", str(root / "teach" / "final"), "--k", "2",
           "--max-tokens", "24", "--engine", "vllm", "--out", str(root / "labels"))  # fmt: skip
    return root


def test_teaching_teaches_the_known_half_and_labels_come_from_the_model(tiny: Path) -> None:
    world = load_world(tiny / "world")
    history = json.loads((tiny / "teach" / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, 11)) and history[-1]["loss"] < history[0]["loss"]
    replayed = [json.loads(line) for line in (tiny / "teach" / "replay.jsonl").open()]
    assert replayed and all(r["question"] and isinstance(r["turn"], str) for r in replayed)  # the base's own turns
    probe = history[-1]["probe_right"]
    assert probe["taught"] > probe["unknown"], probe  # greedy, held-out phrasing: the taught facts, not the rest

    labels = read_labels(tiny / "labels" / "labels.jsonl")
    assert len(labels) == len(world.questions)
    for lab in labels:  # the class is what the samples say, whatever was taught
        q = world.question(lab.example.id)
        assert lab.split == q.split  # the entity's split, not the text hash
        assert lab.p_closed == sum(is_right(a, lab.example) for a in lab.closed) / 2
        assert lab.klass == classify(lab.p_closed, lab.p_search)
    taught_right = [lab for lab in labels if world.question(lab.example.id).taught and lab.p_closed > 0]
    assert taught_right, "no taught fact was answered right closed-book"
    report = json.loads((tiny / "labels" / "classes.json").read_text())["taught_vs_known"]["all"]
    assert report["questions"] == len(labels) and report["known"] == sum(lab.klass == "known" for lab in labels)
    corpus = [json.loads(line) for line in (tiny / "labels" / "corpus.jsonl").open()]
    assert {p["id"] for p in corpus} == {p["id"] for p in world.passages}


def test_sft_grpo_and_eval_gate_run_on_the_world(tiny: Path) -> None:
    labels = str(tiny / "labels" / "labels.jsonl")
    invoke("sft", "--labels", labels, "--model", str(tiny / "teach" / "final"), "--out", str(tiny / "sft"),
           "--max-steps", "1", "--batch-size", "2", "--decision-weight", "10", "--logging-steps", "1",
           "--save-steps", "1")  # fmt: skip
    assert (tiny / "sft" / "final" / "adapter_config.json").is_file()
    logged = json.loads((tiny / "sft" / "checkpoint-1" / "trainer_state.json").read_text())["log_history"]
    # the weighted loss ran: every trace's first answer is trained, so its decision token was in the batch
    assert [entry["decision_loss"] > 0 for entry in logged if "decision_loss" in entry] == [True]
    invoke("train", "--labels", labels, "--model", str(tiny / "sft" / "final"), "--out", str(tiny / "grpo"),
           "--max-steps", "1", "--batch-size", "2", "--num-generations", "2", "--max-completion-length", "24",
           "--rollout-engine", "vllm")  # fmt: skip
    assert (tiny / "grpo" / "final" / "adapter_config.json").is_file()
    invoke("eval-gate", "--labels", labels, "--model", str(tiny / "grpo" / "final"), "--engine", "vllm",
           "--policies", "never,always,auto", "--max-tokens", "24", "--out", str(tiny / "gate"))  # fmt: skip
    gate = json.loads((tiny / "gate" / "gate.json").read_text())
    dev = [lab for lab in read_labels(tiny / "labels" / "labels.jsonl") if lab.split == "dev"]
    rows = {r["policy"]: r for r in gate["rows"]}
    assert {"never", "always", "auto", "oracle"} <= set(rows)
    assert all(rows[p]["questions"] == len(dev) for p in ("never", "always", "auto"))
    assert rows["always"]["searches_per_question"] == 1.0 and rows["never"]["searches_per_question"] == 0.0
    report_dir = tiny / "report"
    invoke("world", "report", "--world", str(tiny / "world"), "--labels", labels, "--run", f"grpo={tiny / 'gate'}",
           "--trained", "grpo:auto", "--out", str(report_dir))  # fmt: skip
    report = json.loads((report_dir / "report.json").read_text())
    assert report["split"] == "dev" and sum(c["questions"] for c in report["closed_book"].values()) == len(dev)
    targets = {t["target"]: t for t in report["targets"]}
    over = targets["grpo auto: over-search"]  # measured from the same outcomes as the gate table's row
    assert over["measured"] == next(r["over_search"] for r in report["gates"] if r["policy"] == "auto")
    assert over["met"] is None if over["measured"] is None else over["met"] == (over["measured"] <= 0.05)
    assert (report_dir / "report.png").stat().st_size > 10_000 and "| grpo | auto |" in (
        report_dir / "report.md"
    ).read_text()


def test_the_decision_trains_on_the_world_through_two_cheap_steps(tiny: Path) -> None:
    from safetensors.torch import load_file

    labels = tiny / "labels" / "labels.jsonl"
    if not (tiny / "sft" / "final").is_dir():  # this test alone: its own one-step SFT start
        invoke("sft", "--labels", str(labels), "--model", str(tiny / "teach" / "final"), "--out", str(tiny / "sft"),
               "--max-steps", "1", "--batch-size", "2", "--decision-weight", "10")  # fmt: skip
    out = tiny / "decide"
    invoke("decide", "--labels", str(labels), "--model", str(tiny / "sft" / "final"), "--out", str(out),
           "--steps", "2", "--questions", "2", "--generations", "2", "--eval-every", "2", "--dev-questions", "4",
           "--engine", "hf", "--learning-rate", "1e-3", "--credit", "brier")  # fmt: skip
    history = json.loads((out / "history.json").read_text())
    assert [r["step"] for r in history] == [0, 1, 2]
    assert history[0]["dev_questions"] == history[2]["dev_questions"] == min(4, sum(
        lab.split == "dev" for lab in read_labels(labels)))  # fmt: skip
    assert all(r["rollouts"] == 4 for r in history[1:])  # 2 questions x 2 answers a step
    assert all(r["dev_read"] is None or 0.0 <= r["dev_read"] <= 1.0 for r in (history[0], history[2]))
    # the adapter moved from the SFT start: brier credit gives every closed first answer's decision a gradient
    start, end = (load_file(p / "adapter_model.safetensors") for p in (tiny / "sft" / "final", out / "final"))
    assert start.keys() == end.keys() and any(not (start[k] == end[k]).all() for k in start)
    # training never read a test entity's passage
    test_entities = {lab.example.id.split(":", 2)[2] for lab in read_labels(labels) if lab.split == "test"}
    searched = {json.loads(line)["id"] for line in (out / "corpus.jsonl").open()}
    assert test_entities and not searched & {f"world:{e}" for e in test_entities}
    assert (out / "curve.png").stat().st_size > 10_000 and "| 2 |" in (out / "curve.md").read_text()
