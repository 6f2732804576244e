"""The gate measures of EVALUATION.md on hand-computed cases: classes, over/under-search, AUROC, the oracle, the
majority letter, the confidence sweep and threshold choice, the frozen split, and where a threshold is read from."""

from __future__ import annotations

import pytest

from sem.evaldata.benchmarks import Example
from sem.gate import read_threshold, resolve_threshold, write_threshold
from trainer.evals.labels import HELPED, KNOWN, NEITHER, Label, classify, form_of, is_right, split_of, training_mix
from trainer.evals.measures import auroc, bootstrap_ci, over_search, under_search
from trainer.evals.runs import Outcome, confidence_sweep, oracle, pick_threshold
from trainer.evals.summary import letter_report, summarise


@pytest.mark.parametrize(
    ("p_closed", "p_search", "klass"),
    [(1.0, 0.0, KNOWN), (0.5, 0.0, KNOWN), (0.25, 0.75, HELPED), (0.25, 0.5, HELPED), (0.0, 0.25, NEITHER)],
)
def test_classes_follow_the_pass_rates(p_closed: float, p_search: float, klass: str) -> None:
    assert classify(p_closed, p_search) == klass


def test_over_and_under_search_count_only_their_class() -> None:
    searched = [True, True, False, False, True, False]
    classes = [KNOWN, KNOWN, KNOWN, HELPED, HELPED, NEITHER]
    assert over_search(searched, classes) == pytest.approx(2 / 3)
    assert under_search(searched, classes) == 0.5
    assert over_search([True], [HELPED]) is None  # no known question: no rate, not 0


def test_auroc_hand_cases() -> None:
    assert auroc([0.9, 0.1], [True, False]) == 1.0
    assert auroc([0.1, 0.9], [True, False]) == 0.0
    assert auroc([0.8, 0.4, 0.6, 0.2], [True, True, False, False]) == 0.75  # 3 of 4 pairs ranked right
    assert auroc([0.3], [True]) is None


def test_bootstrap_interval_brackets_the_mean() -> None:
    values = [1.0] * 3 + [0.0] * 9
    low, high = bootstrap_ci(values)
    assert low <= 0.25 <= high and 0.0 <= low < high <= 1.0
    assert bootstrap_ci([]) is None


def test_letters_show_a_one_letter_reflex() -> None:
    report = letter_report(["C", "C", "C", "C"], ["A", "C", "B", "C"])
    assert report["top_share"] == 1.0 and report["accuracy"] == 0.5 == report["majority_baseline"]


def example(i: int, answer: str = "Paris", choices: tuple[str, ...] | None = None) -> Example:
    return Example(f"q{i}", f"question {i}?", (answer,), "needs_search", "t", choices=choices)


def label(i: int, klass: str, p_closed: float = 0.0) -> Label:
    return Label(example(i), "test", [], [], p_closed, 0.0, klass)


def outcome(i: int, policy: str, klass: str, right: bool, searches: int, confidence: float | None = None) -> Outcome:
    return Outcome(f"q{i}", "t", klass, policy, "a", "a", right, float(right), searches, 10, 1 + searches, 0.1,
                   confidence)  # fmt: skip


def test_oracle_takes_never_on_known_and_always_elsewhere() -> None:
    runs = [outcome(0, "never", KNOWN, True, 0), outcome(0, "always", KNOWN, False, 1),
            outcome(1, "never", HELPED, False, 0), outcome(1, "always", HELPED, True, 1)]  # fmt: skip
    chosen = {o.id: o for o in oracle(runs)}
    assert chosen["q0"].searches == 0 and chosen["q0"].right
    assert chosen["q1"].searches == 1 and chosen["q1"].right
    assert {o.policy for o in chosen.values()} == {"oracle"}


def test_summary_rows_and_auroc_from_confidence() -> None:
    labels = [label(0, KNOWN, 1.0), label(1, HELPED), label(2, NEITHER)]
    runs = [outcome(0, "confidence", KNOWN, True, 0, 0.9), outcome(1, "confidence", HELPED, True, 1, 0.2),
            outcome(2, "confidence", NEITHER, False, 0, 0.6)]  # fmt: skip
    (row,) = summarise(runs, labels)
    assert row["accuracy"] == pytest.approx(2 / 3, abs=1e-3)
    assert row["searches_per_question"] == pytest.approx(1 / 3, abs=1e-3)
    assert row["over_search"] == 0.0 and row["under_search"] == 0.0
    assert row["auroc"] == 1.0  # the closed-book-wrong questions (0.2, 0.6) rank above the right one (0.9)
    assert row["open_f1"] == pytest.approx(2 / 3, abs=1e-3)  # all three are open questions


def test_open_f1_leaves_lettered_and_math_questions_out() -> None:
    lettered = Label(example(1, "A", ("x", "y")), "test", [], [], 1.0, 0.0, KNOWN)
    math = Label(Example("q2", "2+2?", ("4",), "known", "gsm8k"), "test", [], [], 1.0, 0.0, KNOWN)
    runs = [outcome(0, "never", NEITHER, False, 0), outcome(1, "never", KNOWN, True, 0),
            outcome(2, "never", KNOWN, True, 0)]  # fmt: skip
    (row,) = summarise(runs, [label(0, NEITHER), lettered, math])
    assert row["open_f1"] == 0.0 and row["accuracy"] == pytest.approx(2 / 3, abs=1e-3)


def test_a_trained_gate_is_scored_by_its_search_probability() -> None:
    """`auto` has no confidence: its AUROC comes from P(search | first answer); an answer without that score counts
    as what the gate did (here: no search, 0), so leaving it out cannot flatter the gate."""
    labels = [label(0, KNOWN, 1.0), label(1, HELPED), label(2, NEITHER), label(3, NEITHER)]
    runs = [outcome(i, "auto", k, False, s, None) for i, k, s in ((0, KNOWN, 1), (1, HELPED, 1), (2, NEITHER, 0),
                                                                  (3, NEITHER, 0))]  # fmt: skip
    for run, p in zip(runs, (0.7, 0.9, 0.4, None), strict=True):
        if p is not None:
            run.extra["search_probability"] = p
    (row,) = summarise(runs, labels)
    # wrong closed-book (0.9, 0.4, unscored 0.0) against right (0.7): one pair ranked right, two wrong
    assert row["auroc"] == 0.333 and (row["scored"], row["unscored"]) == (3, 1) and row["over_search"] == 1.0


def test_confidence_sweep_and_pick() -> None:
    runs = [outcome(0, "confidence", KNOWN, False, 1, 0.9), outcome(1, "confidence", HELPED, True, 1, 0.2)]
    runs[0].extra["first_right"], runs[1].extra["first_right"] = True, False
    sweep = {r["threshold"]: r for r in confidence_sweep(runs, [0.0, 0.5, 1.0])}
    assert sweep[0.0] == {"threshold": 0.0, "accuracy": 0.5, "searches_per_question": 0.0}  # first answers only
    assert sweep[0.5] == {"threshold": 0.5, "accuracy": 1.0, "searches_per_question": 0.5}  # the unsure one searched
    assert sweep[1.0] == {"threshold": 1.0, "accuracy": 0.5, "searches_per_question": 1.0}
    assert pick_threshold(list(sweep.values()))["threshold"] == 0.5
    assert pick_threshold(list(sweep.values()), max_searches_per_question=0.2)["threshold"] == 0.0
    with pytest.raises(ValueError, match="no threshold"):
        pick_threshold(list(sweep.values()), max_searches_per_question=-1)


def test_is_right_by_kind() -> None:
    assert is_right("It is Paris.", example(0)) and not is_right("London", example(0))
    mc = example(1, "B", ("w", "x", "y", "z"))
    assert is_right("B", mc) and not is_right("C", mc)


def test_split_is_frozen_by_text_not_id() -> None:
    a, b = example(0), Example("other-id", "Question 0", ("x",), "known", "u")
    assert split_of(a) == split_of(b)
    splits = [split_of(example(i)) for i in range(400)]
    assert 0.4 < splits.count("train") / 400 < 0.6 and splits.count("dev") and splits.count("test")


def test_threshold_is_read_from_the_model_folder(tmp_path) -> None:
    assert read_threshold(tmp_path) is None and resolve_threshold(None, tmp_path) == 0.5
    write_threshold(tmp_path, 0.35, split="dev")
    assert read_threshold(tmp_path) == 0.35 and resolve_threshold(None, tmp_path) == 0.35
    assert resolve_threshold(0.8, tmp_path) == 0.8  # configured wins


def test_a_recalibration_keeps_how_the_model_is_served(tmp_path) -> None:
    from sem.gate import resolve_confidence_note, update_gate

    update_gate(tmp_path, confidence_note=True)  # `trainer decide --note` marks its checkpoints so
    write_threshold(tmp_path, 0.62, split="dev")
    assert read_threshold(tmp_path) == 0.62 and resolve_confidence_note(None, tmp_path) is True
    assert resolve_confidence_note(False, tmp_path) is False  # configured wins


def test_the_decisions_cut_is_read_from_the_model_folder_and_survives_a_recalibration(tmp_path) -> None:
    from sem.gate import resolve_decision_threshold, update_gate
    from sem.loop_options import LoopOptions
    from sem.settings import LoopDefaults
    from service.models import model_defaults

    assert resolve_decision_threshold(None, tmp_path) is None  # never calibrated: the sampled token decides
    update_gate(tmp_path, confidence_note=True, decision_threshold=0.9)  # `trainer calibrate --decision`
    write_threshold(tmp_path, 0.62, split="dev")  # `confidence` recalibrated after it
    assert resolve_decision_threshold(None, tmp_path) == 0.9 and resolve_decision_threshold(0.5, tmp_path) == 0.5
    served = model_defaults(LoopDefaults(), str(tmp_path))
    assert served.decision_threshold == 0.9 and served.confidence_note is True
    assert LoopOptions.from_defaults(served).decision_threshold == 0.9


async def test_teacher_traces_carry_the_models_own_first_answers(tokenizer, tiny_corpus) -> None:
    """SFT from labels: the first answer is one of the model's samples and the label decides the search; no fixed
    thought string, no placeholder answer (a teacher that wrote "unknown" or "I know this." fails here)."""
    from sem.cache import CachedSearch
    from sem.search.bm25 import BM25Backend
    from trainer.train.sft import teacher_trace

    backend = BM25Backend(tiny_corpus)
    await backend.load()
    hamlet = Example("h", "Who wrote Hamlet?", ("William Shakespeare",), "needs_search", "t")
    known = Label(hamlet, "train", ["Marlowe", "William Shakespeare"], ["Shakespeare"], 0.5, 1.0, KNOWN)
    helped = Label(hamlet, "train", ["Who wrote Hamlet?", "Marlowe", "Bacon"], ["Kyd", "Shakespeare"], 0.0, 0.5, HELPED)
    traces = {}
    for lab, searches in ((known, 0), (helped, 1)):
        trace = traces[lab.klass] = await teacher_trace(hamlet, tokenizer, CachedSearch(backend), label=lab)
        assert trace.answers[0] in lab.closed and trace.search_count == searches
        assert "<think>" not in trace.completion and "unknown" not in trace.completion.lower()
    # its first attempt (not the question asked back), then its own right post-search answer, not the gold
    assert traces[HELPED].answers == ["Marlowe", "Shakespeare"]
    # the known case taught its right sample ("William Shakespeare", its second), not its first ("Marlowe")
    assert traces[KNOWN].answers == ["William Shakespeare"]
    assert traces[KNOWN].completion == "<answer>William Shakespeare</answer>"


async def test_teacher_answers_after_a_search_only_what_the_results_hold(tokenizer, tiny_corpus) -> None:
    """A question search did not help: the answer after the search is trained on only where the inserted results
    hold the gold (a reading lesson); where they do not, the trace goes on with the model's own attempt, out of the
    loss: a gold from nowhere would teach the model to answer past what it retrieved."""
    from sem.cache import CachedSearch
    from sem.search.bm25 import BM25Backend
    from trainer.train.sft import IGNORE, sft_row, teacher_trace

    backend = BM25Backend(tiny_corpus)
    await backend.load()
    hamlet = Example("h", "Who wrote Hamlet?", ("William Shakespeare",), "needs_search", "t")
    nowhere = Example("z", "Who wrote Hamlet?", ("Zebedee Quorn",), "needs_search", "t")
    for example, after, taught in ((hamlet, "William Shakespeare", True), (nowhere, "Marlowe", False)):
        lab = Label(example, "train", ["Marlowe", "Marlowe", "Bacon"], ["Kyd"], 0.0, 0.0, "neither")
        trace = await teacher_trace(example, tokenizer, CachedSearch(backend), label=lab)
        assert trace.search_count == 1 and trace.answers == ["Marlowe", after]  # the same results both times
        row = sft_row(trace, tokenizer.eos_token_id)
        trained = tokenizer.decode([t for t in row["labels"] if t != IGNORE])
        assert "<answer>Marlowe</answer>" in trained and "<search>" in trained  # the attempt and the search
        assert (after in trained.split("</search>")[-1]) is taught
        assert "Zebedee" not in trained and "[1]" not in trained  # neither a gold from nowhere nor the results


def test_training_mix_balances_by_what_the_model_gets_right() -> None:
    """Every question with a reward spread (right closed-book or after a search at least once), as many never-right
    ones of the same datasets; `kind` follows the closed-book label, not the dataset."""

    def lab(i: int, source: str, p_closed: float, p_search: float) -> Label:
        example = Example(f"{source}/{i}", f"question {source} {i}", ("x",), "needs_search", source)
        return Label(example, "train", [], [], p_closed, p_search, "neither")

    labels = [lab(0, "nq_open", 0.25, 0.0), lab(1, "nq_open", 0.0, 0.5), lab(2, "mmlu", 1.0, 1.0)]
    labels += [lab(10 + i, "nq_open", 0.0, 0.0) for i in range(5)] + [lab(20 + i, "gsm8k", 0.0, 0.0) for i in range(5)]
    mix = training_mix(labels)
    by_id = {e.id: e for e in mix}
    assert {"nq_open/0", "nq_open/1", "mmlu/2"} <= set(by_id) and len(mix) == 6
    silent = [e for e in mix if e.id not in ("nq_open/0", "nq_open/1", "mmlu/2")]
    assert sum(e.source == "nq_open" for e in silent) >= 2  # the same datasets: 2 open ones for the 2 open signals
    assert by_id["nq_open/0"].kind == "known" and by_id["nq_open/1"].kind == "needs_search"
    assert by_id["mmlu/2"].kind == "known" and all(e.kind == "needs_search" for e in silent)
    assert training_mix(labels) == mix  # seeded


def test_the_base_ships_its_gate_and_a_local_calibration_wins(tmp_path) -> None:
    """Set-up puts the base's calibration beside its weights: the service then serves it with the confidence gate
    by default (SEM_LOOP__POLICY or the request still decide); a calibration made here is not overwritten."""
    import json

    from sem.assets import BASE_GATE, MODEL_WHEEL, _write_marker, base_model_dir, prepare_base_model
    from sem.gate import read_gate, resolve_policy

    path = base_model_dir(tmp_path)
    path.mkdir(parents=True)
    _write_marker(path, MODEL_WHEEL)  # as if prepared: prepare_base_model only installs the gate
    assert resolve_policy(None, path) == "auto"
    prepare_base_model(tmp_path)
    shipped = json.loads(BASE_GATE.read_text())
    assert read_gate(path)["policy"] == "confidence" and read_threshold(path) == shipped["confidence_threshold"]
    assert resolve_policy(None, path) == "confidence" and resolve_policy("auto", path) == "auto"
    write_threshold(path, 0.3, policy="confidence")
    prepare_base_model(tmp_path)
    assert read_threshold(path) == 0.3


def test_an_adapter_carries_its_gate_into_the_merged_model(tmp_path) -> None:
    """`trainer publish --gate` puts the calibration beside the adapter; set-up installs it beside the merged
    weights (the service's default policy), and publishing without one drops a stale calibration."""
    import json

    from sem.assets import MARKER, TUNED_ADAPTER, prepare_tuned_model, tuned_model_dir
    from sem.corpus import file_sha256
    from sem.gate import read_gate, resolve_policy
    from trainer.train.lora import publish_adapter

    calibrated = tmp_path / "export"
    calibrated.mkdir()
    write_threshold(calibrated, 0.35, policy="confidence")
    adapter = publish_adapter(TUNED_ADAPTER, tmp_path / "adapter", base_id="base", gate=calibrated / "sem_gate.json")
    merged = tuned_model_dir(tmp_path / "home")
    merged.mkdir(parents=True)  # as if merged: the marker names this adapter, so only the gate is installed
    (merged / MARKER).write_text(json.dumps({"sha256": file_sha256(adapter / "adapter_model.safetensors")}))
    assert resolve_policy(None, merged) == "auto"
    prepare_tuned_model(tmp_path / "home", adapter=adapter)
    assert read_gate(merged)["policy"] == "confidence" and read_threshold(merged) == 0.35
    publish_adapter(TUNED_ADAPTER, adapter, base_id="base")
    assert not (adapter / "sem_gate.json").exists()


def test_a_calibration_never_writes_through_a_link(tmp_path) -> None:
    """A model folder of links to another's files (as tests and users make them) gets its own gate file."""
    original, linked = tmp_path / "original", tmp_path / "linked"
    original.mkdir()
    linked.mkdir()
    write_threshold(original, 0.5)
    (linked / "sem_gate.json").symlink_to(original / "sem_gate.json")
    write_threshold(linked, 0.1)
    assert read_threshold(linked) == 0.1 and read_threshold(original) == 0.5


def test_a_reflex_on_the_question_form_scores_half_within_a_form() -> None:
    """A gate whose score only follows the form (sure after every lettered question, unsure after every open one)
    gets 0.5 when only questions of the same form are compared, whatever its plain AUROC; a score that reads
    knowledge inside a form keeps its AUROC there."""
    lettered = ("w", "x", "y", "z")
    labels = [Label(example(0, "A", lettered), "test", [], [], 1.0, 1.0, KNOWN),
              Label(example(1, "B", lettered), "test", [], [], 0.0, 0.0, NEITHER),
              Label(example(2), "test", [], [], 0.0, 0.0, NEITHER), Label(example(3), "test", [], [], 1.0, 1.0, KNOWN),
              Label(example(4), "test", [], [], 0.0, 0.0, NEITHER)]  # fmt: skip
    reflex = [outcome(i, "auto", lab.klass, False, 0) for i, lab in enumerate(labels)]
    knowing = [outcome(i, "confidence", lab.klass, False, 0, c) for i, (lab, c) in enumerate(zip(labels,
               (0.9, 0.2, 0.3, 0.8, 0.1), strict=True))]  # fmt: skip
    for o, p in zip(reflex, (0.01, 0.01, 0.99, 0.99, 0.99), strict=True):
        o.extra["search_probability"] = p
    by_policy = {row["policy"]: row for row in summarise(reflex + knowing, labels)}
    assert by_policy["auto"]["auroc"] == pytest.approx(3.5 / 6, abs=1e-3)  # wrong-vs-right pairs across forms
    assert by_policy["auto"]["auroc_same_form"] == 0.5
    assert by_policy["confidence"]["auroc"] == 1.0 == by_policy["confidence"]["auroc_same_form"]
    assert form_of(labels[0].example) == "lettered" and form_of(labels[2].example) == "open"


def test_gate_table_scores_saved_answers_with_todays_measures(tmp_path) -> None:
    """A run saved before a measure existed (its gate.json rows lack it) gets it from its outcomes and labels."""
    import json
    from dataclasses import asdict

    from trainer.evals.ablation import gate_rows
    from trainer.evals.gaterun import GateRun
    from trainer.evals.labels import write_labels

    labels = [label(0, KNOWN, 1.0), label(1, NEITHER), label(2, NEITHER)]
    runs = [outcome(i, "confidence", lab.klass, i == 0, int(i > 0), c) for i, (lab, c) in enumerate(zip(labels,
            (0.9, 0.2, 0.4), strict=True))]  # fmt: skip
    write_labels(labels, tmp_path / "labels" / "labels.jsonl")
    (tmp_path / "outcomes.jsonl").write_text("".join(json.dumps(asdict(o)) + "\n" for o in runs))
    old_row = {"policy": "confidence", "accuracy": 0.333, "auroc": 1.0}
    (tmp_path / "gate.json").write_text(
        json.dumps({"split": "test", "rows": [old_row], "classes": {"all": {"known": 1, "helped": 0, "neither": 2}}})
    )
    (row,) = gate_rows("base", GateRun.read(tmp_path))
    assert row["model"] == "base" and row["auroc"] == 1.0 == row["auroc_same_form"]
    assert row["searches_per_question"] == pytest.approx(2 / 3, abs=1e-3) and row["known"] == 1


def test_reading_is_scored_where_the_results_held_the_answer() -> None:
    """`read_accuracy`: right answers among searched ones whose inserted results held the gold (the results only,
    not the search call that repeats the question); a search that found nothing to read is left out."""
    from sem.loop import SearchRecord, Segment, Trace
    from trainer.evals.runs import outcome_of

    def traced(result: str, answer: str) -> Trace:
        parts = [
            "<answer>Paris</answer>\n<search> Capital of Zubrowka? </search>",
            result,
            f"<answer>{answer}</answer>",
        ]
        trace = Trace("r", "p", [], completion="".join(parts), searches=[SearchRecord("q", [], False, 0.0)])
        trace.segments = [Segment(parts[0], True), Segment(parts[1], False), Segment(parts[2], True)]
        return trace

    zubrowka = Label(Example("z", "Capital of Zubrowka?", ("Lutz",), "needs_search", "t"), "test", [], [], 0, 1, HELPED)
    lutz, nothing = "\n<result>\n[1] Its capital is Lutz.\n</result>\n", "\n<result>\nNo results.\n</result>\n"
    runs = [outcome_of(zubrowka, "always", traced(lutz, "Lutz"), 0.1),
            outcome_of(zubrowka, "always", traced(lutz, "Paris"), 0.1),
            outcome_of(zubrowka, "always", traced(nothing, "Paris"), 0.1)]  # fmt: skip
    assert [o.extra["gold_in_results"] for o in runs] == [True, True, False]
    (row,) = summarise(runs, [zubrowka])
    assert row["read_accuracy"] == 0.5 and row["readable"] == 2
    fresh = traced(lutz, "Lutz")
    fresh.fresh_from = 3  # read_fresh set the first answer aside: the outcome says so, one context says nothing
    assert outcome_of(zubrowka, "confidence", fresh, 0.1).extra["read_fresh"] is True
    assert "read_fresh" not in runs[0].extra


def test_trainer_eval_writes_the_one_outcome_and_compare_reads_runs_old_and_new(tmp_path) -> None:
    """`trainer eval` answers are `Outcome`s too (the class the data's kind, the benchmark's score as F1, EM in extra);
    `trainer compare` reads them, and the committed runs written before (`kind` and `em` at the top level) give the
    rows their committed comparison holds."""
    import json
    from dataclasses import asdict
    from pathlib import Path

    from trainer.evals.compare import kind_rows, read_outcomes
    from trainer.evals.evaluate import outcome, write_report

    paris = Example("p", "Capital of France?", ("Paris",), "needs_search", "nq_open")
    lettered = Example("m", "Which?", ("B",), "known", "mmlu", choices=("w", "x", "y", "z"))
    runs = [outcome(paris, "always", "Paris, France", "Lyon", 1, 12, 2, 0.3),  # F1 2/3: right, not an exact match
            outcome(lettered, "always", "(B) x", "(B) x", 0, 5, 1, 0.1, 0.9)]  # fmt: skip
    assert [(o.klass, o.right, o.extra["em"]) for o in runs] == [("needs_search", True, 0.0), ("known", True, 1.0)]
    assert runs[0].f1 == pytest.approx(2 / 3) and runs[1].f1 == 1.0 and runs[1].confidence == 0.9
    (row,) = [r for r in write_report(runs, tmp_path, "eval") if r.source == "all"]
    assert (row.em, row.f1, row.searches_per_question) == (0.5, pytest.approx(0.8333, abs=1e-4), 0.5)
    saved = read_outcomes(tmp_path / "results.json")
    assert [Outcome(**o) for o in saved] == runs
    rows = {(r.kind, r.em) for r in kind_rows("new", saved)}
    assert rows == {("needs_search", 0.0), ("known", 1.0), ("all", 0.5)}

    committed = Path(__file__).resolve().parents[2] / "results" / "sem-smollm2"
    old = [asdict(r) for r in kind_rows("base", read_outcomes(committed / "base" / "results.json"))]
    reference = [r for r in json.loads((committed / "comparison.json").read_text())["rows"] if r["model"] == "base"]
    assert old and sorted(old, key=str) == sorted(reference, key=str)
