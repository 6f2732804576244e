"""The evaluation commands: `eval` (benchmarks), `label` / `calibrate` / `eval-gate` (the gate judged by what the
model knows, ../shared/EVALUATION.md), `gate-table`, `readme-table` and `compare` (reports)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from trainer.commands.options import (
    Concurrency,
    Engine,
    LabelsFile,
    MaxTokens,
    Model,
    Samples,
    Temperature,
    Title,
    policies_or_fail,
    read_labels_or_fail,
)
from trainer.evals.gaterun import NamedFile, NamedRun, named_file, named_run
from trainer.runtime import (
    LABEL_CONCURRENCY,
    LABEL_MAX_TOKENS,
    LABEL_SAMPLES,
    LABEL_TEMPERATURE,
    LABELS,
    RUNS,
    gate_corpus,
    gate_loop,
    labels_corpus,
    retriever,
    servable,
)

log = logging.getLogger("trainer")


LEDGER = Path("results/test-ledger.jsonl")
GATE_SETS = {  # dataset -> the split its questions come from; TriviaQA only where the source has it
    "nq_open": "dev", "triviaqa": "dev", "hotpotqa": "dev", "musique": "dev", "2wiki": "dev", "mmlu": "dev",
    "gsm8k": "test",
}  # fmt: skip


def evaluate(
    data_file: Annotated[Path, typer.Option("--data", help="Questions (JSONL from `trainer data`).")] = RUNS
    / "data"
    / "dev.jsonl",
    corpus: Annotated[Path | None, typer.Option(help="Search corpus (default: beside --data).")] = None,
    model: Model = None,
    url: Annotated[str | None, typer.Option(help="Evaluate a running service instead of a local model.")] = None,
    engine: Engine = "auto",
    policies: Annotated[str, typer.Option(help="Comma list of auto, never, always, budget.")] = "auto,never,always",
    max_searches: Annotated[int, typer.Option(help="The budget of the `budget` policy.")] = 3,
    max_tokens: MaxTokens = 128,
    limit: Annotated[int | None, typer.Option(help="Only the first N questions.")] = None,
    out: Annotated[Path, typer.Option(help="results.md, results.json and results.png go here.")] = RUNS / "eval",
    title: Title = "SEM evaluation",
) -> None:
    """EM, F1, search ratio and searches per question per benchmark and policy (table, JSON, plot), of a local model
    (default: SEM_MODEL or the embedded one) or a running service."""
    from trainer.data import read_jsonl
    from trainer.evals.evaluate import POLICIES, markdown_table, run_remote, write_report

    chosen = policies_or_fail(policies, POLICIES)
    examples = read_jsonl(data_file)[:limit]
    if url:
        outcomes = asyncio.run(run_remote(url, examples, chosen, max_searches=max_searches, max_tokens=max_tokens))
    else:
        with servable(model) as model_path:
            outcomes = asyncio.run(_eval_local(model_path, engine, corpus or data_file.with_name("corpus.jsonl"),
                                               examples, chosen, max_searches, max_tokens))  # fmt: skip
    rows = write_report(outcomes, out, title)
    typer.echo(markdown_table(rows, title))
    typer.echo(f"-> {out}/results.md, results.json, results.png")


async def _eval_local(model, engine_kind, corpus, examples, policies, max_searches, max_tokens):
    from sem.engines import build_engine
    from sem.loop import SearchLoop
    from sem.settings import EngineKind, Settings
    from trainer.evals.evaluate import run_local

    settings = (
        Settings(model=model, engine=EngineKind(engine_kind)) if model else Settings(engine=EngineKind(engine_kind))
    )
    engine = await build_engine(settings)
    try:
        loop = SearchLoop(engine, retriever(corpus))
        return await run_local(loop, examples, policies, max_searches=max_searches, max_tokens=max_tokens)
    finally:
        await engine.aclose()


def gate_pool(source: str, per_set: int) -> list:
    """The first `per_set` questions of every set the source has: open questions, multiple choice and math."""
    from trainer.data import load_source

    pool = []
    for name, split in GATE_SETS.items():
        try:
            pool += load_source(name, source, split, limit=per_set)
        except FileNotFoundError as exc:
            log.warning("skipping %s: %s", name, exc)
    return pool


def label_cmd(
    source: Annotated[str, typer.Option(help="sample, a data folder, or hf.")] = "sample",
    out: Annotated[Path, typer.Option(help="labels.jsonl, corpus.jsonl and classes.json go here.")] = RUNS / "labels",
    per_set: Annotated[int, typer.Option(help="Questions per dataset (split 2:1:1 into train/dev/test).")] = 60,
    k: Samples = LABEL_SAMPLES,
    temperature: Temperature = LABEL_TEMPERATURE,
    max_tokens: MaxTokens = LABEL_MAX_TOKENS,
    model: Model = None,
    engine: Engine = "auto",
    concurrency: Concurrency = LABEL_CONCURRENCY,
    split: Annotated[
        str | None, typer.Option(help="Label only this split (train, dev, test): e.g. test, to evaluate a new model.")
    ] = None,
) -> None:
    """Label questions by what the model (default: SEM_MODEL or the served one) knows: k closed-book and k one-search
    answers each -> known/helped/neither."""
    from trainer.evals.labels import SPLITS, class_counts, label, split_of, write_labels

    if split is not None and split not in SPLITS:
        raise typer.BadParameter(f"{split!r} is not one of {', '.join(SPLITS)}", param_hint="--split")
    examples = gate_pool(source, per_set)
    corpus = gate_corpus(examples, out / "corpus.jsonl")  # the whole pool's paragraphs: the same corpus any split
    if split is not None:
        examples = [e for e in examples if split_of(e) == split]
    with gate_loop(model, engine, corpus) as (loop_, search_loop, _):
        labels = loop_.run_until_complete(
            label(search_loop, examples, k=k, temperature=temperature, max_tokens=max_tokens, concurrency=concurrency)
        )
    write_labels(labels, out / "labels.jsonl")
    counts = class_counts(labels)
    (out / "classes.json").write_text(json.dumps(counts, indent=2) + "\n")
    for name, c in counts.items():
        typer.echo(f"{name:10s} {c}")
    typer.echo(f"-> {out / 'labels.jsonl'} ({len(labels)} questions)")


def calibrate(
    labels_file: LabelsFile = LABELS,
    split: Annotated[str, typer.Option(help="Where the threshold is chosen (never the test split).")] = "dev",
    model: Model = None,
    engine: Engine = "auto",
    max_searches_per_question: Annotated[
        float | None, typer.Option(help="Best accuracy within this search budget (default: best accuracy).")
    ] = None,
    write: Annotated[bool, typer.Option(help="Store the threshold beside the model (the service reads it).")] = True,
    serve: Annotated[
        bool, typer.Option(help="With --write: the service answers with this gate when a request names no policy.")
    ] = True,
    decision: Annotated[
        bool,
        typer.Option(
            help="Calibrate `auto`'s cut on its P(search) after the note instead (a `trainer decide "
            "--note` model; stored as decision_threshold, the policy left as it is)."
        ),
    ] = False,
    max_tokens: MaxTokens = 64,
    read_fresh: Annotated[
        bool | None,
        typer.Option(
            help="Read the answer after a search without the first answer, as served (default: the model's gate file)."
        ),
    ] = None,
) -> None:
    """Choose the `confidence` gate's threshold of a model (default: SEM_MODEL or the embedded one) on dev: answer with
    a search after every first answer once, then replay every threshold (below it, the post-search answer counts;
    above, the first). With --decision, the same for the cut on `auto`'s P(search) after its confidence note."""
    from sem.gate import resolve_confidence_note, resolve_read_fresh
    from trainer.evals.labels import is_right
    from trainer.evals.runs import confidence_sweep, decision_sweep, pick_threshold, run_policies

    if split == "test":
        raise typer.BadParameter("the test split is frozen for reporting; calibrate on dev", param_hint="--split")
    labels = read_labels_or_fail(labels_file, split)
    with gate_loop(model, engine, labels_corpus(labels_file)) as (loop_, search_loop, model_path):
        fresh = resolve_read_fresh(read_fresh, model_path)  # the answers after the searches as they will be served
        if decision and not resolve_confidence_note(None, model_path):
            raise typer.BadParameter("the cut reads the decision after the confidence note: this model was not "
                                     "trained with it (`trainer decide --note`)", param_hint="--decision")  # fmt: skip
        policy = "auto" if decision else "confidence"
        outcomes = loop_.run_until_complete(run_policies(search_loop, labels, [policy], max_tokens=max_tokens,
                                                         confidence_threshold=1.0, confidence_note=decision,
                                                         decision_threshold=0.0 if decision else None,
                                                         read_fresh=fresh))  # fmt: skip
    by_id = {lab.example.id: lab.example for lab in labels}
    for o in outcomes:
        o.extra["first_right"] = is_right(o.first_answer, by_id[o.id])
    if decision:  # P(search) crowds at both ends for a trained model: every hundredth is a cut
        sweep = decision_sweep(outcomes, [round(0.01 * i, 2) for i in range(101)])
    else:
        sweep = confidence_sweep(outcomes, [round(0.05 * i, 2) for i in range(21)])
    best = pick_threshold(sweep, max_searches_per_question)
    for r in sweep:
        typer.echo(f"{r['threshold']:.2f}  accuracy {r['accuracy']:.3f}  searches {r['searches_per_question']:.2f}")
    typer.echo(f"chosen: {best}")
    if write and decision:
        _store_cut(model, model_path, best, split, len(labels))
    elif write:
        _store_threshold(model, model_path, best, split, len(labels), serve)


def _store_cut(model: str | None, model_path: str, best: dict, split: str, questions: int) -> None:
    """The chosen cut on `auto`'s P(search) beside the model (its gate file's decision_threshold)."""
    from sem.gate import update_gate
    from trainer.train.lora import is_adapter

    how = {"split": split, "questions": questions, **{k: best[k] for k in ("accuracy", "searches_per_question")}}
    home = model if model and is_adapter(model) else model_path
    typer.echo(f"-> {update_gate(home, decision_threshold=best['threshold'], decision_calibration=how)}")


def _store_threshold(model: str | None, model_path: str, best: dict, split: str, questions: int, serve: bool) -> None:
    """The chosen threshold beside the model, for the service (and, with `serve`, as its default policy). An adapter
    keeps its own calibration (its merge is temporary); `export`, `eval-gate` and `publish` carry it."""
    from sem.gate import write_threshold
    from trainer.train.lora import is_adapter

    details = {k: best[k] for k in ("accuracy", "searches_per_question")} | ({"policy": "confidence"} if serve else {})
    home = model if model and is_adapter(model) else model_path
    typer.echo(f"-> {write_threshold(home, best['threshold'], split=split, questions=questions, **details)}")


def eval_gate(
    labels_file: LabelsFile = LABELS,
    split: Annotated[str, typer.Option(help="dev while choosing; test (frozen) only with --final.")] = "dev",
    final: Annotated[bool, typer.Option(help="The one test run of a candidate (needs --rule; logged).")] = False,
    rule: Annotated[
        Path | None, typer.Option(help="With --final: the committed file whose rule picks the winner.")
    ] = None,
    ledger: Annotated[Path, typer.Option(help="Where --final runs are logged (commit it).")] = LEDGER,
    model: Model = None,
    engine: Engine = "auto",
    policies: Annotated[
        str, typer.Option(help="Comma list of auto, confidence, either, never, always.")
    ] = "never,always,auto",
    out: Annotated[Path, typer.Option(help="gate.md, gate.json, gate.png and outcomes.jsonl go here.")] = RUNS / "gate",
    title: Title = "Search gate against the model's own labels",
    max_tokens: MaxTokens = 64,
    read_fresh: Annotated[
        bool | None,
        typer.Option(help="Read the answer after a search without the first answer (default: the model's gate file)."),
    ] = None,
) -> None:
    """Over-search, under-search, AUROC, accuracy and cost per policy of a model (default: SEM_MODEL or the embedded
    one), beside never, always and the oracle, with intervals and paired differences. Test runs are refused unless
    final (trainer.evals.ledger)."""
    from sem.gate import resolve_threshold
    from trainer.evals.gaterun import GateRun
    from trainer.evals.ledger import SplitError, check_split

    chosen = policies_or_fail(policies, {"auto", "confidence", "either", "never", "always"})
    try:
        committed = check_split(split, final=final, rule=rule)
    except SplitError as exc:
        raise typer.BadParameter(str(exc), param_hint="--split") from exc
    labels = read_labels_or_fail(labels_file, split)
    with gate_loop(model, engine, labels_corpus(labels_file)) as (loop_, search_loop, model_path):
        threshold = resolve_threshold(None, model_path)
        outcomes, options = _answer(loop_, search_loop, model_path, labels, chosen, threshold, max_tokens, read_fresh)
    # an adapter is named by its own path, not the temporary merge the engine loaded
    run = GateRun.judged(outcomes, labels, split=split, model=model or model_path, labels_file=labels_file,
                         threshold=threshold, options=options)  # fmt: skip
    if committed is not None:  # before saving: the run's own files cannot be what makes the tree unclean
        _log_final(ledger, committed, run, chosen, labels_file, out)
    typer.echo(run.save(out, title))
    typer.echo(f"-> {out}/gate.md, gate.json, gate.png, outcomes.jsonl")


def _log_final(ledger: Path, committed: Any, run: Any, policies: list[str], labels_file: Path, out: Path) -> None:
    """A --final run in the ledger, or refused (neither logged nor saved) when the ledger says no."""
    from trainer.evals.ledger import SplitError, record

    try:
        record(ledger, committed, model=run.model, policies=policies, labels=str(labels_file), out=str(out),
               rows=run.rows)  # fmt: skip
    except SplitError as exc:
        raise typer.BadParameter(f"the run is neither logged nor saved: {exc}", param_hint="--final") from exc
    typer.echo(f"-> logged in {ledger} (commit it)")


def _answer(loop_: Any, search_loop: Any, model_path: str, labels: list, policies: list[str], threshold: float,
            max_tokens: int, read_fresh: bool | None = None) -> tuple[list, dict | None]:  # fmt: skip
    """Every policy's answers, `auto`'s own P(search) on each, and multiple choice scored by likelihood."""
    from sem.gate import resolve_confidence_note, resolve_decision_threshold, resolve_read_fresh
    from trainer.evals.likelihood import Scorer
    from trainer.evals.options import option_report, score_options
    from trainer.evals.runs import run_policies

    note = resolve_confidence_note(None, model_path)  # `auto` as the model was trained (sem.gate)
    cut = resolve_decision_threshold(None, model_path) if note else None  # as calibrated for it, if it was
    fresh = resolve_read_fresh(read_fresh, model_path)
    outcomes = loop_.run_until_complete(run_policies(search_loop, labels, policies, max_tokens=max_tokens,
                                                     confidence_threshold=threshold, confidence_note=note,
                                                     decision_threshold=cut, read_fresh=fresh))  # fmt: skip
    lettered = [lab.example for lab in labels if lab.example.choices]
    scorer = Scorer.load(model_path)  # one load for both read-backs
    options = option_report(score_options(scorer, lettered)) if lettered else None
    _score_decisions(outcomes, labels, scorer, note)
    return outcomes, options


def _score_decisions(outcomes: list, labels: list, scorer: Any, note: bool = False) -> None:
    """`auto`'s own score per question: P(search | its first answer), read as the loop serves the decision (after
    the confidence note, when the model was trained with one), for the trained gate's AUROC."""
    from trainer.evals.decision import search_probabilities

    questions = {lab.example.id: lab.example.prompt_text() for lab in labels}
    turns = [o for o in outcomes if "first_turn" in o.extra]
    if turns:
        probabilities = search_probabilities(scorer, [(questions[o.id], o.extra["first_turn"]) for o in turns], note)
        for o, p in zip(turns, probabilities, strict=True):
            o.extra["search_probability"] = round(p, 5)


def gate_table(
    run: Annotated[
        list[NamedRun],
        typer.Option(parser=named_run, metavar="NAME=DIR", help="name=<an eval-gate --out folder> (repeat)."),
    ],
    out: Annotated[Path, typer.Option(help="ablation.md, .json and .png go here.")] = RUNS / "gate-table",
    title: str = "Search gates on the frozen test split, each model against its own labels",
) -> None:
    """Several eval-gate runs in one table and plot: the models and policies side by side."""
    from trainer.evals.ablation import gate_rows, markdown, plot

    rows = [row for item in run for row in gate_rows(item.name, item.run)]
    out.mkdir(parents=True, exist_ok=True)
    report = markdown(rows, title)
    (out / "ablation.md").write_text(report)
    (out / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, out / "ablation.png", title)
    typer.echo(report)
    typer.echo(f"-> {out}/ablation.md, ablation.json, ablation.png")


def readme_table(
    readme: Annotated[Path, typer.Option(help="The README whose gate table is generated.")] = Path("README.md"),
    check: Annotated[bool, typer.Option(help="Only check that README agrees with the result files.")] = False,
) -> None:
    """README's gate table from the committed result files (results/gate/), scored with today's measures."""
    from trainer.evals.report import gate_table, readme_block, update_readme

    root = readme.resolve().parent
    if check:
        if readme_block(readme.read_text()) != gate_table(root):
            typer.echo("README's gate table disagrees with results/gate/: run `trainer readme-table`", err=True)
            raise typer.Exit(1)
        typer.echo("README's gate table agrees with the result files")
        return
    typer.echo(f"{readme}: {'updated' if update_readme(readme, root) else 'already up to date'}")


def compare(
    run: Annotated[
        list[NamedFile],
        typer.Option(parser=named_file, metavar="NAME=FILE", help="name=<`trainer eval` results.json> (repeat)."),
    ],
    out: Annotated[Path, typer.Option(help="comparison.md, .json and .png go here.")] = RUNS / "compare",
    tuned: Annotated[str, typer.Option(help="The label of the tuned model.")] = "tuned",
    base: Annotated[str, typer.Option(help="The label whose never/always runs are the baselines.")] = "base",
) -> None:
    """Base vs tuned (and baselines) in one table and plot, with SEM's targets checked."""
    from trainer.evals.compare import compare as run_compare
    from trainer.evals.compare import markdown

    runs = {item.name: item.path for item in run}
    if {tuned, base} - set(runs):
        raise typer.BadParameter(f"--run must include the labels {tuned!r} and {base!r}", param_hint="--run")
    rows, checks = run_compare(runs, out, tuned, base)
    typer.echo(markdown(rows, checks))
    typer.echo(f"-> {out}/comparison.md, comparison.json, comparison.png")


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)
    app.command("label")(label_cmd)
    app.command()(calibrate)
    app.command("eval-gate")(eval_gate)
    app.command("gate-table")(gate_table)
    app.command("readme-table")(readme_table)
    app.command()(compare)
