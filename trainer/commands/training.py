"""The training commands: `data` (the benchmark mix), `sft` (the template warm-up) and `train` (GRPO)."""

from __future__ import annotations

import asyncio
import json
import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from trainer.runtime import RUNS, default_model, labels_corpus, retriever

log = logging.getLogger("trainer")


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
        needs, known = _relabel(needs + known, label_model or default_model(), label_samples)
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
        from trainer.evals.labels import read_labels

        labels = {lab.example.id: lab for lab in read_labels(labels_file, "train")}
        examples, corpus = [lab.example for lab in labels.values()], labels_corpus(labels_file)
    else:
        examples, corpus = read_jsonl(data_dir / "train.jsonl"), data_dir / "corpus.jsonl"
    final = run_sft(
        model or default_model(), examples, retriever(corpus), out, max_steps=max_steps, batch_size=batch_size,
        learning_rate=learning_rate, save_steps=save_steps, resume=resume, lora_r=lora_r or None, labels=labels,
    )  # fmt: skip
    typer.echo(f"sft model -> {final}")


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

    start = model or (str(RUNS / "sft" / "final") if (RUNS / "sft" / "final").is_dir() else default_model())
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
    final = run_grpo(start, examples, retriever(corpus), args, resume=resume)
    typer.echo(f"grpo model -> {final}  (log: {out / 'log.jsonl'})")


def _training_questions(data_dir: Path, labels_file: Path | None) -> tuple[list, Path]:
    """GRPO's questions and corpus: `trainer data`'s mix, or the labels' train split balanced by what the model
    knows (trainer.evals.labels.training_mix)."""
    if labels_file is None:
        from trainer.data import read_jsonl

        return read_jsonl(data_dir / "train.jsonl"), data_dir / "corpus.jsonl"
    from trainer.data import class_balance
    from trainer.evals.labels import read_labels, training_mix

    examples = training_mix(read_labels(labels_file, "train"))
    if not examples:
        raise typer.BadParameter(f"no train question in {labels_file} was ever answered right", param_hint="--labels")
    typer.echo(f"GRPO on {len(examples)} labelled questions: {class_balance(examples)}")
    return examples, labels_corpus(labels_file)


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


def register(app: typer.Typer) -> None:
    app.command()(data)
    app.command()(sft)
    app.command()(train)
