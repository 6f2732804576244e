"""`trainer`: data -> sft -> train -> eval -> export, each with --help.

Options come from the command line, or from a YAML config file whose sections are the command names
(`trainer --config trainer/configs/cpu-smollm2.yaml train --max-steps 2`: the command line wins).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(help="SEM post-training: GRPO for search efficiency.", no_args_is_help=True, add_completion=False)
log = logging.getLogger("trainer")

RUNS = Path("runs")
LABELS = RUNS / "labels" / "labels.jsonl"
_SEARCH_BACKEND: str | None = None  # --search-backend


class Reward(StrEnum):
    sem = "sem"
    ikea = "ikea"
    otc = "otc"
    em = "em"


class RolloutEngineChoice(StrEnum):
    auto = "auto"  # vllm when installed, else hf
    vllm = "vllm"
    hf = "hf"


class Labelling(StrEnum):
    fixed = "fixed"  # MuSiQue/HotpotQA need search, MMLU is known (SEM's mix)
    model = "model"  # the base model's closed-book pass rate decides (IKEA's mode)


def _unwind_on_sigterm(signum: int, _frame: object) -> None:
    """A stopped run (`kill`, a scheduler's SIGTERM) unwinds like Ctrl+C: `finally` blocks close the rollout's vLLM
    engine, whose processes would otherwise outlive the trainer."""
    raise SystemExit(128 + signum)


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="YAML file with a section per command.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
    search_backend: Annotated[
        str | None, typer.Option(help="Search backend of the loop (default: SEM_SEARCH__BACKEND, else bm25).")
    ] = None,
) -> None:
    global _SEARCH_BACKEND
    _SEARCH_BACKEND = search_backend
    signal.signal(signal.SIGTERM, _unwind_on_sigterm)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if config is not None:
        import yaml

        sections = yaml.safe_load(config.read_text()) or {}
        ctx.default_map = {
            cmd: {k.replace("-", "_"): v for k, v in (opts or {}).items()} for cmd, opts in sections.items()
        }


def _retriever(corpus: Path):
    """The search the trainer's loop runs, built by the service's factory: the backend `--search-backend` (or
    SEM_SEARCH__BACKEND) names, over `corpus` for the local indexes, behind an in-process cache."""
    from concurrent.futures import ThreadPoolExecutor

    from sem.cache import CachedSearch
    from sem.search import build_backend
    from sem.settings import Settings

    settings = Settings(corpus=corpus)
    if _SEARCH_BACKEND:
        settings.search.backend = _SEARCH_BACKEND
    with ThreadPoolExecutor(1) as pool:  # its own event loop: callers may already run one
        backend = pool.submit(asyncio.run, build_backend(settings)).result()
    return CachedSearch(backend)


def _default_model() -> str:
    """What training starts from: SEM_MODEL, else the embedded base (never the already tuned default)."""
    from sem.assets import base_model_dir
    from sem.settings import Settings

    settings = Settings()
    return settings.model or str(base_model_dir(settings.home_dir))


@app.command()
def data(
    source: Annotated[
        str,
        typer.Option(
            "--source",
            "--data-dir",
            help="Where the benchmarks come from: `sample` (shipped, offline), a folder in the original layout "
            "(../shared/data), or `hf` (each dataset's Hugging Face home).",
        ),
    ] = "sample",
    out: Annotated[Path, typer.Option(help="Where train.jsonl, dev.jsonl, test.jsonl and corpus.jsonl go.")] = RUNS
    / "data",
    per_class: Annotated[int, typer.Option(help="Training questions per class (needs search / known).")] = 64,
    dev_per_class: Annotated[int, typer.Option(help="Dev (and test) questions per class.")] = 25,
    seed: int = 0,
    labelling: Annotated[
        Labelling, typer.Option(help="fixed (SEM's mix) or model (base pass rate).")
    ] = Labelling.fixed,
    label_model: Annotated[str | None, typer.Option(help="Model for --labelling model (default: SEM_MODEL).")] = None,
    label_samples: Annotated[int, typer.Option(help="Closed-book samples per question for --labelling model.")] = 4,
) -> None:
    """Build the balanced training mix, a dev mix to choose recipes on, a frozen test mix, and their search corpus.

    Dev and test come from the datasets' held-out splits (halved by question text), disjoint from train and from
    each other by normalised question text."""
    from trainer.data import (
        balanced_mix,
        check_disjoint,
        class_balance,
        drop_overlaps,
        held_out_halves,
        load_source,
        paragraph_corpus,
        write_jsonl,
    )

    needs = load_source("musique", source, "train") + load_source("hotpotqa", source, "train")
    known = load_source("mmlu", source, "train") + load_source("gsm8k", source, "train", limit=500)
    held_out = load_source("musique", source, "dev") + load_source("hotpotqa", source, "dev")
    dev_needs, test_needs = held_out_halves(held_out)
    dev_known, test_known = load_source("mmlu", source, "dev"), load_source("mmlu", source, "test")
    if labelling is Labelling.model:
        needs, known = _relabel(needs + known, label_model or _default_model(), label_samples)
    train = balanced_mix(needs, known, per_class, seed)
    dev_needs, dev_known = drop_overlaps(dev_needs, train), drop_overlaps(dev_known, train)
    test_needs, test_known = drop_overlaps(test_needs, train + dev_needs), drop_overlaps(test_known, train + dev_known)
    dev = balanced_mix(dev_needs, dev_known, dev_per_class, seed)
    test = balanced_mix(test_needs, test_known, dev_per_class, seed)
    check_disjoint(train=train, dev=dev, test=test)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("dev", dev), ("test", test)):
        write_jsonl(rows, out / f"{name}.jsonl")
    from sem.corpus import write_corpus

    n = write_corpus(paragraph_corpus(train + dev + test), out / "corpus.jsonl")
    typer.echo(f"train {len(train)} {class_balance(train)}  dev {len(dev)} {class_balance(dev)}  "
               f"test {len(test)} {class_balance(test)}  corpus {n} passages")  # fmt: skip
    typer.echo(f"-> {out}")


def _relabel(examples: list, model: str, k: int) -> tuple[list, list]:
    """IKEA-style labels: a question the base model never answers right closed-book needs search."""
    from sem.engines.hf import HFEngine
    from sem.loop import LoopOptions, SearchLoop, SearchPolicy
    from sem.scoring import score
    from trainer.data import label_by_pass_rate

    engine = HFEngine.load(model)
    loop = SearchLoop(engine, searcher=None)  # type: ignore[arg-type]  # never searches

    def answer_fn(example, n: int) -> list[str]:
        options = LoopOptions(policy=SearchPolicy.never, max_tokens=64, temperature=1.0)
        return [asyncio.run(loop.run(example.prompt_text(), options)).answer for _ in range(n)]

    def is_correct(answer: str, example) -> bool:
        return score(answer, list(example.answers), source=example.source, choices=example.choices) >= 0.5

    labelled = label_by_pass_rate(examples, answer_fn, k=k, is_correct=is_correct)
    return [e for e in labelled if e.kind == "needs_search"], [e for e in labelled if e.kind == "known"]


@app.command()
def sft(
    data_dir: Annotated[Path, typer.Option("--data", help="Output of `trainer data`.")] = RUNS / "data",
    model: Annotated[str | None, typer.Option(help="Base model (default: SEM_MODEL or the embedded one).")] = None,
    out: Annotated[Path, typer.Option(help="Checkpoints and the final model.")] = RUNS / "sft",
    max_steps: int = 60,
    batch_size: int = 4,
    learning_rate: float = 5e-5,
    save_steps: int = 50,
    lora_r: Annotated[int, typer.Option(help="LoRA rank; 0 fine-tunes the whole model.")] = 8,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in --out.")] = False,
    labels_file: Annotated[
        Path | None,
        typer.Option("--labels", help="`trainer label` output: its train split, the model's own first answers."),
    ] = None,
) -> None:
    """Warm up the template with teacher traces written through the real loop (results masked)."""
    from trainer.data import read_jsonl
    from trainer.sft import run_sft

    labels = None
    if labels_file is not None:  # the model's own attempts; the label decides whether a search follows
        from trainer.gate import read_labels

        labels = {lab.example.id: lab for lab in read_labels(labels_file, "train")}
        examples, corpus = [lab.example for lab in labels.values()], _labels_corpus(labels_file)
    else:
        examples, corpus = read_jsonl(data_dir / "train.jsonl"), data_dir / "corpus.jsonl"
    final = run_sft(
        model or _default_model(), examples, _retriever(corpus), out, max_steps=max_steps, batch_size=batch_size,
        learning_rate=learning_rate, save_steps=save_steps, resume=resume, lora_r=lora_r or None, labels=labels,
    )  # fmt: skip
    typer.echo(f"sft model -> {final}")


@app.command()
def train(
    data_dir: Annotated[Path, typer.Option("--data", help="Output of `trainer data`.")] = RUNS / "data",
    model: Annotated[str | None, typer.Option(help="Start model (default: runs/sft/final when present).")] = None,
    out: Annotated[Path, typer.Option(help="Checkpoints, log.jsonl and the final model.")] = RUNS / "grpo",
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in --out.")] = False,
    dry_run: Annotated[bool, typer.Option(help="Print the resolved settings, check the batch shape; no run.")] = False,
    world_size: Annotated[
        int | None, typer.Option(help="Training processes, for --dry-run (default: WORLD_SIZE, else 1).")
    ] = None,
    # The rest default to SEMGRPOConfig's (trainer/config.py): TRL's GRPOConfig with SEM's fields
    reward: Annotated[Reward | None, typer.Option(help="Reward (default sem).")] = None,
    tau: Annotated[float | None, typer.Option(help="sem/ikea: score a first answer needs (default 0.8).")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Optimizer steps (default 200).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Answers per micro-batch and process (default 4).")] = None,
    gradient_accumulation_steps: Annotated[
        int | None, typer.Option(help="Micro-batches per optimizer step and rollout: less memory, same step.")
    ] = None,
    num_generations: Annotated[int | None, typer.Option(help="Answers per prompt (default 4).")] = None,
    max_completion_length: Annotated[int | None, typer.Option(help="Tokens over all turns (default 128).")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (default 1.0).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Default 1e-5.")] = None,
    beta: Annotated[float | None, typer.Option(help="KL weight (TRL's default 0).")] = None,
    loss_type: Annotated[str | None, typer.Option(help="TRL's loss (default dapo).")] = None,
    lora: Annotated[bool | None, typer.Option(help="Train a LoRA adapter, else the whole model (default on).")] = None,
    lora_r: Annotated[int | None, typer.Option(help="LoRA rank (default 8; an adapter keeps its own).")] = None,
    max_searches: Annotated[int | None, typer.Option(help="Search budget of a rollout (default 2).")] = None,
    save_steps: Annotated[int | None, typer.Option(help="Checkpoint every so many steps (default 25).")] = None,
    rollout_engine: Annotated[
        RolloutEngineChoice,
        typer.Option(help="vllm: a step's answers batched on vLLM, weights pushed each step; hf: transformers."),
    ] = RolloutEngineChoice.auto,
    vllm_dtype: Annotated[str | None, typer.Option(help="dtype of the in-process vLLM (default float32).")] = None,
    vllm_server_url: Annotated[
        str | None, typer.Option(help="Roll out on this `vllm serve` (deploy/README.md), not in-process.")
    ] = None,
    vllm_gpu_memory_utilization: Annotated[
        float | None, typer.Option(help="In-process vLLM on a GPU: its share of the memory (default 0.3).")
    ] = None,
    labels_file: Annotated[
        Path | None,
        typer.Option("--labels", help="`trainer label` output: train on its train split, balanced by the labels."),
    ] = None,
) -> None:
    """GRPO with a search-efficiency reward; rollouts run sem.loop on vLLM (or the policy through transformers)."""
    from trainer.config import SEMGRPOConfig
    from trainer.grpo import run_grpo

    start = model or (str(RUNS / "sft" / "final") if (RUNS / "sft" / "final").is_dir() else _default_model())
    given = {
        "reward": reward.value if reward else None, "tau": tau, "max_steps": max_steps,
        "per_device_train_batch_size": batch_size, "gradient_accumulation_steps": gradient_accumulation_steps,
        "num_generations": num_generations, "max_completion_length": max_completion_length,
        "temperature": temperature, "learning_rate": learning_rate, "beta": beta, "loss_type": loss_type,
        "lora": lora, "lora_r": lora_r, "max_searches": max_searches, "save_steps": save_steps,
        "rollout_engine": None if rollout_engine is RolloutEngineChoice.auto else rollout_engine.value,
        "vllm_dtype": vllm_dtype, "vllm_server_base_url": vllm_server_url,
        "vllm_gpu_memory_utilization": vllm_gpu_memory_utilization,
    }  # fmt: skip
    given = {k: v for k, v in given.items() if v is not None}
    if dry_run:
        recipe = SEMGRPOConfig.recipe(**given)
        _check_batch_shape(recipe, world_size)
        typer.echo(json.dumps({"model": start, "data": str(data_dir), "out": str(out), **recipe}, indent=2))
        return
    try:
        args = SEMGRPOConfig(output_dir=str(out), **given)
    except ValueError as exc:  # TRL's own checks (e.g. the batch shape at this process count)
        raise typer.BadParameter(str(exc)) from exc
    examples, corpus = _training_questions(data_dir, labels_file)
    final = run_grpo(start, examples, _retriever(corpus), args, resume=resume)
    typer.echo(f"grpo model -> {final}  (log: {out / 'log.jsonl'})")


def _training_questions(data_dir: Path, labels_file: Path | None) -> tuple[list, Path]:
    """GRPO's questions and corpus: `trainer data`'s mix, or the labels' train split balanced by what the model
    knows (trainer.gate.training_mix)."""
    if labels_file is None:
        from trainer.data import read_jsonl

        return read_jsonl(data_dir / "train.jsonl"), data_dir / "corpus.jsonl"
    from trainer.data import class_balance
    from trainer.gate import read_labels, training_mix

    examples = training_mix(read_labels(labels_file, "train"))
    if not examples:
        raise typer.BadParameter(f"no train question in {labels_file} was ever answered right", param_hint="--labels")
    typer.echo(f"GRPO on {len(examples)} labelled questions: {class_balance(examples)}")
    return examples, _labels_corpus(labels_file)


def _check_batch_shape(recipe: dict, world_size: int | None) -> None:
    """TRL's rule: the answers of one step (micro-batch x processes x accumulation) split into whole groups."""
    import os

    processes = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    batch, accumulation = recipe["per_device_train_batch_size"], recipe["gradient_accumulation_steps"]
    groups = recipe["num_generations"]
    answers = batch * processes * accumulation
    if answers % groups:
        raise typer.BadParameter(
            f"batch-size {batch} x {processes} processes x {accumulation} micro-batches = {answers} answers a step, "
            f"not a multiple of num-generations {groups}"
        )
    server = recipe["vllm_server_base_url"] if recipe["rollout_engine"] == "vllm" else None
    typer.echo(
        f"{processes} process(es) x {batch} x {accumulation} = {answers} answers a step: {answers // groups} prompts "
        f"x {groups} generations; rollouts on {recipe['rollout_engine']}" + (f" at {server}" if server else "")
    )


@app.command("eval")
def evaluate(
    data_file: Annotated[Path, typer.Option("--data", help="Questions (JSONL from `trainer data`).")] = RUNS
    / "data"
    / "dev.jsonl",
    corpus: Annotated[Path | None, typer.Option(help="Search corpus (default: beside --data).")] = None,
    model: Annotated[
        str | None, typer.Option(help="Model path, LoRA adapter, or `base` (default: SEM_MODEL or the embedded one).")
    ] = None,
    url: Annotated[str | None, typer.Option(help="Evaluate a running service instead of a local model.")] = None,
    engine: Annotated[str, typer.Option(help="auto, vllm or hf (local model only).")] = "auto",
    policies: Annotated[str, typer.Option(help="Comma list of auto, never, always, budget.")] = "auto,never,always",
    max_searches: Annotated[int, typer.Option(help="The budget of the `budget` policy.")] = 3,
    max_tokens: int = 128,
    limit: Annotated[int | None, typer.Option(help="Only the first N questions.")] = None,
    out: Annotated[Path, typer.Option(help="results.md, results.json and results.png go here.")] = RUNS / "eval",
    title: str = "SEM evaluation",
) -> None:
    """EM, F1, search ratio and searches per question per benchmark and policy (table, JSON, plot)."""
    from trainer.data import read_jsonl
    from trainer.evaluate import POLICIES, markdown_table, run_remote, write_report

    chosen = [p.strip() for p in policies.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(POLICIES))
    if unknown:
        raise typer.BadParameter(f"unknown policies {unknown}; choose from {list(POLICIES)}", param_hint="--policies")
    examples = read_jsonl(data_file)[:limit]
    if url:
        outcomes = asyncio.run(run_remote(url, examples, chosen, max_searches=max_searches, max_tokens=max_tokens))
    else:
        with _servable(model) as model_path:
            outcomes = asyncio.run(_eval_local(model_path, engine, corpus or data_file.with_name("corpus.jsonl"),
                                               examples, chosen, max_searches, max_tokens))  # fmt: skip
    rows = write_report(outcomes, out, title)
    typer.echo(markdown_table(rows, title))
    typer.echo(f"-> {out}/results.md, results.json, results.png")


@contextmanager
def _servable(model: str | None) -> Iterator[str | None]:
    """A model the engines can load: a LoRA adapter is merged into its base in a temporary folder first."""
    from trainer.lora import is_adapter

    if model == "base":  # the embedded base checkpoint, before SEM's adapter
        from sem.assets import base_model_dir
        from sem.settings import Settings

        model = str(base_model_dir(Settings().home_dir))
    if model is None or not is_adapter(model):
        yield model
        return
    from trainer.grpo import merge_adapter

    with tempfile.TemporaryDirectory(prefix="sem-merged-") as tmp:
        yield str(merge_adapter(Path(model), Path(tmp)))


async def _eval_local(model, engine_kind, corpus, examples, policies, max_searches, max_tokens):
    from sem.engines import build_engine
    from sem.loop import SearchLoop
    from sem.settings import EngineKind, Settings
    from trainer.evaluate import run_local

    settings = (
        Settings(model=model, engine=EngineKind(engine_kind)) if model else Settings(engine=EngineKind(engine_kind))
    )
    engine = await build_engine(settings)
    try:
        loop = SearchLoop(engine, _retriever(corpus))
        return await run_local(loop, examples, policies, max_searches=max_searches, max_tokens=max_tokens)
    finally:
        await engine.aclose()


# ---- the gate, judged by what the model knows (EVALUATION.md) --------------------------------------------------

GATE_SETS = {  # dataset -> the split its questions come from; TriviaQA only where the source has it
    "nq_open": "dev", "triviaqa": "dev", "hotpotqa": "dev", "musique": "dev", "2wiki": "dev", "mmlu": "dev",
    "gsm8k": "test",
}  # fmt: skip


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


def _gate_corpus(examples: list, out: Path) -> Path:
    """The questions' own paragraphs plus the default Wikipedia summaries: what the labelling searches."""
    from sem.corpus import iter_passages, write_corpus
    from sem.settings import Settings
    from trainer.data import paragraph_corpus

    rows = paragraph_corpus(examples) + [p.model_dump() for p in iter_passages(Settings().corpus_path)]
    write_corpus(rows, out)
    return out


def _labels_corpus(labels_file: Path) -> Path:
    """The corpus the labels were searched on, beside them; rebuilt from the labelled questions when missing."""
    from trainer.gate import read_labels

    corpus = labels_file.with_name("corpus.jsonl")
    if not corpus.is_file():
        _gate_corpus([lab.example for lab in read_labels(labels_file)], corpus)
    return corpus


@contextmanager
def _gate_loop(model: str | None, engine_kind: str, corpus: Path) -> Iterator:
    """A SearchLoop on a local model (adapters merged) over a corpus; closes the engine afterwards."""
    from sem.engines import build_engine
    from sem.loop import SearchLoop
    from sem.settings import EngineKind, Settings

    with _servable(model) as model_path:
        settings = Settings(engine=EngineKind(engine_kind), **({"model": model_path} if model_path else {}))
        loop_ = asyncio.new_event_loop()
        engine = loop_.run_until_complete(build_engine(settings))
        try:
            yield loop_, SearchLoop(engine, _retriever(corpus)), settings.model_path
        finally:
            loop_.run_until_complete(engine.aclose())
            loop_.close()


@app.command("label")
def label_cmd(
    source: Annotated[str, typer.Option(help="sample, a data folder, or hf.")] = "sample",
    out: Annotated[Path, typer.Option(help="labels.jsonl, corpus.jsonl and classes.json go here.")] = RUNS / "labels",
    per_set: Annotated[int, typer.Option(help="Questions per dataset (split 2:1:1 into train/dev/test).")] = 60,
    k: Annotated[int, typer.Option(help="Samples per question and policy.")] = 4,
    temperature: float = 0.8,
    max_tokens: int = 64,
    model: Annotated[str | None, typer.Option(help="Model to label for (default: SEM_MODEL or the served).")] = None,
    engine: Annotated[str, typer.Option(help="auto, vllm or hf.")] = "auto",
    concurrency: int = 16,
    split: Annotated[
        str | None, typer.Option(help="Label only this split (train, dev, test): e.g. test, to evaluate a new model.")
    ] = None,
) -> None:
    """Label questions by what the model knows: k closed-book and k one-search answers each -> known/helped/neither."""
    from trainer.gate import SPLITS, class_counts, label, split_of, write_labels

    if split is not None and split not in SPLITS:
        raise typer.BadParameter(f"{split!r} is not one of {', '.join(SPLITS)}", param_hint="--split")
    examples = gate_pool(source, per_set)
    corpus = _gate_corpus(examples, out / "corpus.jsonl")  # the whole pool's paragraphs: the same corpus any split
    if split is not None:
        examples = [e for e in examples if split_of(e) == split]
    with _gate_loop(model, engine, corpus) as (loop_, search_loop, _):
        labels = loop_.run_until_complete(
            label(search_loop, examples, k=k, temperature=temperature, max_tokens=max_tokens, concurrency=concurrency)
        )
    write_labels(labels, out / "labels.jsonl")
    counts = class_counts(labels)
    (out / "classes.json").write_text(json.dumps(counts, indent=2) + "\n")
    for name, c in counts.items():
        typer.echo(f"{name:10s} {c}")
    typer.echo(f"-> {out / 'labels.jsonl'} ({len(labels)} questions)")


@app.command()
def calibrate(
    labels_file: Annotated[Path, typer.Option("--labels", help="From `trainer label`.")] = LABELS,
    split: Annotated[str, typer.Option(help="Where the threshold is chosen (never the test split).")] = "dev",
    model: Annotated[str | None, typer.Option(help="The model whose gate is calibrated ('base' for the base).")] = None,
    engine: str = "auto",
    max_searches_per_question: Annotated[
        float | None, typer.Option(help="Best accuracy within this search budget (default: best accuracy).")
    ] = None,
    write: Annotated[bool, typer.Option(help="Store the threshold beside the model (the service reads it).")] = True,
    serve: Annotated[
        bool, typer.Option(help="With --write: the service answers with this gate when a request names no policy.")
    ] = True,
    max_tokens: int = 64,
) -> None:
    """Choose the `confidence` gate's threshold on dev: answer with a search after every first answer once, then
    replay every threshold (below it, the post-search answer counts; above, the first)."""
    from sem.gate import write_threshold
    from trainer.gate import confidence_sweep, is_right, pick_threshold, read_labels, run_policies

    if split == "test":
        raise typer.BadParameter("the test split is frozen for reporting; calibrate on dev", param_hint="--split")
    from trainer.lora import is_adapter

    labels = read_labels(labels_file, split)
    with _gate_loop(model, engine, _labels_corpus(labels_file)) as (loop_, search_loop, model_path):
        outcomes = loop_.run_until_complete(run_policies(search_loop, labels, ["confidence"], max_tokens=max_tokens,
                                                         confidence_threshold=1.0))  # fmt: skip
    by_id = {lab.example.id: lab.example for lab in labels}
    for o in outcomes:
        o.extra["first_right"] = is_right(o.first_answer, by_id[o.id])
    sweep = confidence_sweep(outcomes, [round(0.05 * i, 2) for i in range(21)])
    best = pick_threshold(sweep, max_searches_per_question)
    for r in sweep:
        typer.echo(f"{r['threshold']:.2f}  accuracy {r['accuracy']:.3f}  searches {r['searches_per_question']:.2f}")
    typer.echo(f"chosen: {best}")
    if write:
        details = {k: best[k] for k in ("accuracy", "searches_per_question")}
        if serve:
            details["policy"] = "confidence"
        # An adapter keeps its calibration (its merge is temporary); `export`, `eval-gate` and `publish` carry it.
        home = model if model and is_adapter(model) else model_path
        path = write_threshold(home, best["threshold"], split=split, questions=len(labels), **details)
        typer.echo(f"-> {path}")


@app.command("eval-gate")
def eval_gate(
    labels_file: Annotated[Path, typer.Option("--labels", help="From `trainer label`.")] = LABELS,
    split: Annotated[str, typer.Option(help="dev while choosing; test (frozen) only with --final.")] = "dev",
    final: Annotated[bool, typer.Option(help="The one test run of a candidate (needs --rule; logged).")] = False,
    rule: Annotated[
        Path | None, typer.Option(help="With --final: the committed file whose rule picks the winner.")
    ] = None,
    ledger: Annotated[Path, typer.Option(help="Where --final runs are logged (commit it).")] = Path(
        "results/test-ledger.jsonl"
    ),
    model: Annotated[str | None, typer.Option(help="Model path, adapter, or 'base'.")] = None,
    engine: str = "auto",
    policies: Annotated[str, typer.Option(help="Comma list of auto, confidence, never, always.")] = "never,always,auto",
    out: Annotated[Path, typer.Option(help="gate.md, gate.json, gate.png and outcomes.jsonl go here.")] = RUNS / "gate",
    title: str = "Search gate against the model's own labels",
    max_tokens: int = 64,
) -> None:
    """Over-search, under-search, AUROC, accuracy and cost per policy, beside never, always and the oracle, with
    intervals and paired differences. Test runs are refused unless final (trainer.evals.ledger)."""
    from sem.gate import resolve_threshold
    from trainer.evals.ledger import SplitError, check_split, record
    from trainer.gate import class_counts, compare, markdown, oracle, plot, read_labels, run_policies, summarise
    from trainer.likelihood import Scorer
    from trainer.options import option_report, score_options

    chosen = [p.strip() for p in policies.split(",") if p.strip()]
    unknown = set(chosen) - {"auto", "confidence", "never", "always"}
    if unknown:
        raise typer.BadParameter(f"unknown policies {sorted(unknown)}", param_hint="--policies")
    try:
        committed = check_split(split, final=final, rule=rule)
    except SplitError as exc:
        raise typer.BadParameter(str(exc), param_hint="--split") from exc
    labels = read_labels(labels_file, split)
    if not labels:
        raise typer.BadParameter(f"no {split!r} questions in {labels_file}", param_hint="--split")
    with _gate_loop(model, engine, _labels_corpus(labels_file)) as (loop_, search_loop, model_path):
        threshold = resolve_threshold(None, model_path)
        outcomes = loop_.run_until_complete(run_policies(search_loop, labels, chosen, max_tokens=max_tokens,
                                                         confidence_threshold=threshold))  # fmt: skip
        lettered = [lab.example for lab in labels if lab.example.choices]
        scorer = Scorer.load(model_path)  # one load for both read-backs
        options = option_report(score_options(scorer, lettered)) if lettered else None
        _score_decisions(outcomes, labels, scorer)
    if {"never", "always"} <= set(chosen):
        outcomes += oracle(outcomes)
    rows = summarise(outcomes, labels)
    counts = class_counts(labels)
    ran = list(dict.fromkeys(o.policy for o in outcomes))
    comparisons = [compare(outcomes, a, b) for a in ran for b in ("never", "always") if b in ran and a != b]
    out.mkdir(parents=True, exist_ok=True)
    report = markdown(rows, counts, f"{title} ({split}, {len(labels)} questions; confidence threshold {threshold})",
                      options, comparisons)  # fmt: skip
    (out / "gate.md").write_text(report)
    (out / "gate.json").write_text(json.dumps({"split": split, "model": model_path, "labels": str(labels_file),
                                               "confidence_threshold": threshold,
                                               "rows": rows, "classes": counts, "option_likelihood": options,
                                               "comparisons": comparisons}, indent=2) + "\n")  # fmt: skip
    if committed is not None:
        record(ledger, committed, model=model_path, policies=chosen, labels=str(labels_file), out=str(out), rows=rows)
        typer.echo(f"-> logged in {ledger} (commit it)")
    with (out / "outcomes.jsonl").open("w") as f:
        f.writelines(json.dumps(asdict(o)) + "\n" for o in outcomes)
    plot(rows, out / "gate.png", title)
    typer.echo(report)
    typer.echo(f"-> {out}/gate.md, gate.json, gate.png, outcomes.jsonl")


def _score_decisions(outcomes: list, labels: list, scorer: Any) -> None:
    """`auto`'s own score per question: P(search | its first answer), for the trained gate's AUROC."""
    from trainer.decision import search_probabilities

    questions = {lab.example.id: lab.example.prompt_text() for lab in labels}
    turns = [o for o in outcomes if "first_turn" in o.extra]
    if turns:
        probabilities = search_probabilities(scorer, [(questions[o.id], o.extra["first_turn"]) for o in turns])
        for o, p in zip(turns, probabilities, strict=True):
            o.extra["search_probability"] = round(p, 5)


@app.command("gate-table")
def gate_table(
    run: Annotated[list[str], typer.Option(help="label=results/gate/<dir> (repeat; from `trainer eval-gate`).")],
    out: Annotated[Path, typer.Option(help="ablation.md, .json and .png go here.")] = Path("results/gate"),
    title: str = "Search gates on the frozen test split, each model against its own labels",
) -> None:
    """Several eval-gate runs in one table and plot: the models and policies side by side."""
    from trainer.ablation import gate_rows, markdown, plot

    rows = []
    for item in run:
        label, sep, path = item.partition("=")
        if not sep or not (Path(path) / "gate.json").is_file():
            raise typer.BadParameter(f"{item!r}: expected label=<an eval-gate --out folder>", param_hint="--run")
        rows += gate_rows(label, Path(path))
    out.mkdir(parents=True, exist_ok=True)
    report = markdown(rows, title)
    (out / "ablation.md").write_text(report)
    (out / "ablation.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, out / "ablation.png", title)
    typer.echo(report)
    typer.echo(f"-> {out}/ablation.md, ablation.json, ablation.png")


@app.command("readme-table")
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


@app.command()
def export(
    adapter: Annotated[Path, typer.Option(help="A LoRA adapter folder (e.g. runs/grpo/final).")] = RUNS
    / "grpo"
    / "final",
    out: Annotated[Path, typer.Option(help="The merged checkpoint (serve it with SEM_MODEL=...).")] = RUNS / "export",
) -> None:
    """Merge a LoRA adapter into its base model, for the service to load."""
    from trainer.grpo import merge_adapter

    typer.echo(f"merged -> {merge_adapter(adapter, out)}")


@app.command()
def compare(
    run: Annotated[list[str], typer.Option(help="label=path/to/results.json (repeat; from `trainer eval`).")],
    out: Annotated[Path, typer.Option(help="comparison.md, .json and .png go here.")] = RUNS / "compare",
    tuned: Annotated[str, typer.Option(help="The label of the tuned model.")] = "tuned",
    base: Annotated[str, typer.Option(help="The label whose never/always runs are the baselines.")] = "base",
) -> None:
    """Base vs tuned (and baselines) in one table and plot, with SEM's targets checked."""
    from trainer.compare import compare as run_compare
    from trainer.compare import markdown

    runs = {}
    for item in run:
        label, sep, path = item.partition("=")
        if not sep or not Path(path).is_file():
            raise typer.BadParameter(
                f"expected label=results.json with an existing file, got {item!r}", param_hint="--run"
            )
        runs[label] = Path(path)
    if {tuned, base} - set(runs):
        raise typer.BadParameter(f"--run must include the labels {tuned!r} and {base!r}", param_hint="--run")
    rows, checks = run_compare(runs, out, tuned, base)
    typer.echo(markdown(rows, checks))
    typer.echo(f"-> {out}/comparison.md, comparison.json, comparison.png")


@app.command()
def publish(
    adapter: Annotated[Path, typer.Option(help="The trained adapter.")] = RUNS / "grpo" / "final",
    out: Annotated[Path | None, typer.Option(help="Default: where `sem assets` looks for SEM's adapter.")] = None,
    gate: Annotated[
        Path | None,
        typer.Option(help="Its calibration (default: the adapter's own, from `trainer calibrate --model <adapter>`)."),
    ] = None,
) -> None:
    """Make an adapter the service's default: copied (bf16) to where `sem assets` merges it into the base."""
    from sem.assets import TUNED_ADAPTER
    from sem.gate import gate_path
    from trainer.lora import publish_adapter

    if gate is None and gate_path(adapter).is_file():  # calibrated as an adapter: its own gate goes with it
        gate = gate_path(adapter)

    if gate is not None and not gate.is_file():
        raise typer.BadParameter(f"{gate} is not a file", param_hint="--gate")
    dest = publish_adapter(adapter, out or TUNED_ADAPTER, base_id="HuggingFaceTB/SmolLM2-135M-Instruct", gate=gate)
    size = (dest / "adapter_model.safetensors").stat().st_size
    typer.echo(f"adapter -> {dest} ({size / 1e6:.1f} MB); `sem assets` merges it into the default model")


if __name__ == "__main__":
    app()
