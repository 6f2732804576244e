"""The training commands: `data` (the benchmark mix), `sft` (the template warm-up) and `train` (GRPO)."""

from __future__ import annotations

import functools
import json
import logging
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from trainer.commands.options import (
    ConfigHelp,
    DryRun,
    LabelsFile,
    MaybeLabelsFile,
    Model,
    Resume,
    Source,
    build_config,
    config_fields,
    read_labels_or_fail,
)
from trainer.runtime import (
    LABEL_CONCURRENCY,
    LABEL_MAX_TOKENS,
    LABEL_SAMPLES,
    LABEL_TEMPERATURE,
    LABELS,
    RUNS,
    default_model,
    gate_corpus,
    gate_loop,
    labels_training_corpus,
    retriever,
    training_corpus,
)

log = logging.getLogger("trainer")


class Labelling(StrEnum):
    fixed = "fixed"  # MuSiQue/HotpotQA need search, MMLU is known (SEM's mix)
    model = "model"  # the model's own labels (trainer label's labeller): never right closed-book -> needs search


def data(
    source: Source = "sample",
    out: Annotated[Path, typer.Option(help="Where train.jsonl, dev.jsonl, test.jsonl and corpus.jsonl go.")] = RUNS
    / "data",
    per_class: Annotated[int, typer.Option(help="Training questions per class (needs search / known).")] = 64,
    dev_per_class: Annotated[int, typer.Option(help="Dev (and test) questions per class.")] = 25,
    seed: int = 0,
    labelling: Annotated[
        Labelling, typer.Option(help="fixed (SEM's mix) or model (the model's own labels, as `trainer label`).")
    ] = Labelling.fixed,
    label_model: Annotated[
        str | None, typer.Option(help="Model for --labelling model (default: SEM_MODEL, else the embedded base).")
    ] = None,
    label_samples: Annotated[
        int, typer.Option(help="Samples per question and policy for --labelling model (`trainer label --k`).")
    ] = LABEL_SAMPLES,
) -> None:
    """Build the balanced training mix, a dev mix to choose recipes on, a frozen test mix, and their search corpus.

    Dev and test come from the datasets' held-out splits (halved by question text), disjoint from train and from
    each other by normalised question text."""
    from sem.corpus import write_corpus
    from trainer.data import build_splits, class_balance, paragraph_corpus, write_jsonl

    relabel = None
    if labelling is Labelling.model:
        relabel = functools.partial(_relabel, model=label_model or default_model(), k=label_samples)
    splits = build_splits(source, per_class, dev_per_class, seed, relabel)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        write_jsonl(rows, out / f"{name}.jsonl")
    n = write_corpus(paragraph_corpus([e for rows in splits.values() for e in rows]), out / "corpus.jsonl")
    typer.echo("  ".join(f"{name} {len(rows)} {class_balance(rows)}" for name, rows in splits.items())
               + f"  corpus {n} passages")  # fmt: skip
    typer.echo(f"-> {out}")


def _relabel(examples: list, model: str, k: int) -> tuple[list, list]:
    """IKEA's mode through the one labeller (`trainer label`'s: k closed-book and k one-search samples a question,
    searching the questions' paragraphs and the default corpus): a question the model never answers right closed-book
    needs search, any other is known (trainer.evals.labels.as_example)."""
    import tempfile

    from trainer.data import KNOWN, NEEDS_SEARCH
    from trainer.evals.labels import as_example, label

    sampling = {"temperature": LABEL_TEMPERATURE, "max_tokens": LABEL_MAX_TOKENS, "concurrency": LABEL_CONCURRENCY}
    with tempfile.TemporaryDirectory(prefix="sem-labelling-") as tmp:
        corpus = gate_corpus(examples, Path(tmp) / "corpus.jsonl")
        with gate_loop(model, "auto", corpus) as (loop_, search_loop, _):
            labels = loop_.run_until_complete(label(search_loop, examples, k=k, **sampling))
    relabelled = [as_example(lab) for lab in labels]
    return [e for e in relabelled if e.kind == NEEDS_SEARCH], [e for e in relabelled if e.kind == KNOWN]


def sft(
    ctx: typer.Context,
    labels_file: LabelsFile = LABELS,
    model: Model = None,
    out: Annotated[Path, typer.Option(help="Checkpoints and the final model.")] = RUNS / "sft",
    resume: Resume = False,
    config_help: ConfigHelp = False,
) -> None:
    """Warm up the template with teacher traces written through the real loop (results masked), from the model's
    own labelled attempts (the labels' train split): a known question is answered with one of its right samples, any
    other with its own attempt, then the search, then an answer the results support (trainer/train/sft.py). No canned
    thought or answer. The model defaults to SEM_MODEL or the embedded one.

    Every other option is a field of SEMSFTConfig (TRL's SFTConfig with the warm-up's defaults,
    trainer/train/config.py): `--max-steps 100 --batch-size 4 --learning-rate 3e-4 --lora-r 16` (`--config-help`
    lists them)."""
    from trainer.train.config import SEMSFTConfig
    from trainer.train.sft import run_sft

    fields = config_fields(ctx, SEMSFTConfig, "sft", config_help)
    if fields is None:
        return
    labels = read_labels_or_fail(labels_file, "train")
    args = build_config(SEMSFTConfig, {**fields, "output_dir": str(out)})
    corpus = labels_training_corpus(labels_file, out / "corpus.jsonl")  # no test passage is ever read
    final = run_sft(model or default_model(), labels, retriever(corpus), args, resume=resume)
    typer.echo(f"sft model -> {final}")


# The dry run's options: the launch it checks the recipe against (`--dry-run` only).
WorldSize = Annotated[
    int | None, typer.Option(help="Training processes (default: --accelerate-config's, WORLD_SIZE, else 1).")
]
Gpus = Annotated[int, typer.Option(help="GPUs on the node (0: a CPU run, no GPU checks).")]
ServerGpus = Annotated[int, typer.Option(help="GPUs of the vLLM server (server layout).")]
GpuGib = Annotated[float, typer.Option(help="Memory of one GPU, GiB.")]
AccelerateConfig = Annotated[
    Path | None, typer.Option(help="The accelerate file to launch with (processes, ZeRO stage).")
]
MemoryModel = Annotated[
    str | None, typer.Option(help="The architecture of the memory plan (default: the start model's, or its base).")
]


def train(
    ctx: typer.Context,
    data_dir: Annotated[Path, typer.Option("--data", help="Output of `trainer data`.")] = RUNS / "data",
    model: Model = None,
    out: Annotated[Path, typer.Option(help="Checkpoints, log.jsonl and the final model.")] = RUNS / "grpo",
    resume: Resume = False,
    dry_run: DryRun = False,
    world_size: WorldSize = None,
    gpus: Gpus = 8,
    server_gpus: ServerGpus = 1,
    gpu_gib: GpuGib = 80.0,
    accelerate_config: AccelerateConfig = None,
    memory_model: MemoryModel = None,
    labels_file: MaybeLabelsFile = None,
    config_help: ConfigHelp = False,
) -> None:
    """GRPO with a search-efficiency reward; rollouts run sem.loop on vLLM (or the policy through transformers), from
    --model, else runs/sft/final, else the embedded base; on `trainer data`'s mix or the --labels' train split.
    --dry-run checks the batch shape, GPU layout and memory plan of the launch its options describe.

    Every other option is a field of SEMGRPOConfig (TRL's GRPOConfig with SEM's fields, trainer/train/config.py), as
    TRL's scripts parse theirs: `--max-steps 2 --batch-size 4 --reward ikea --no-lora` (`--config-help` lists
    them). The YAML's `train:` section sets the same fields; the command line wins."""
    from trainer.train.config import SEMGRPOConfig
    from trainer.train.grpo import run_grpo

    fields = config_fields(ctx, SEMGRPOConfig, "train", config_help)
    if fields is None:  # --config-help
        return
    start = model or (str(RUNS / "sft" / "final") if (RUNS / "sft" / "final").is_dir() else default_model())
    if dry_run:  # TRL's checks would run against this machine's processes: the launch's are checked instead
        launch = _accelerate_launch(accelerate_config, fields["gradient_accumulation_steps"])
        processes = world_size or launch.get("num_processes") or int(os.environ.get("WORLD_SIZE", "1"))
        layout = (gpus, server_gpus, gpu_gib, launch.get("zero_stage", 0), memory_model or start) if gpus else None
        _dry_run(fields, processes, layout, {"model": start, "data": str(data_dir), "out": str(out)})
        return
    args = build_config(SEMGRPOConfig, {**fields, "output_dir": str(out)})  # TRL's checks (the batch shape here)
    examples, corpus = _training_questions(data_dir, labels_file, out / "corpus.jsonl")
    final = run_grpo(start, examples, retriever(corpus), args, resume=resume)
    typer.echo(f"grpo model -> {final}  (log: {out / 'log.jsonl'})")


def _dry_run(fields: dict, processes: int, gpu_layout: tuple | None, where: dict) -> None:
    """The recipe's batch shape at `processes`, then (a GPU launch: gpus, server GPUs, GiB, ZeRO stage, model) its
    layout and memory plan, refused when any does not hold; then the resolved settings."""
    from trainer.train.config import SEMGRPOConfig

    recipe = {name: fields[name] for name in SEMGRPOConfig.RECIPE_FIELDS}
    _check_batch_shape(recipe, processes)
    if gpu_layout:
        _check_gpu_layout(fields, processes, *gpu_layout)
    typer.echo(json.dumps({**where, **recipe}, indent=2))


def _training_questions(data_dir: Path, labels_file: Path | None, corpus_out: Path) -> tuple[list, Path]:
    """GRPO's questions and corpus (written to `corpus_out`, less the test questions' passages): `trainer data`'s
    mix, or the labels' train split balanced by what the model knows (trainer.evals.labels.training_mix)."""
    if labels_file is None:
        from trainer.data import read_jsonl

        train, dev, test = (read_jsonl(f) if (f := data_dir / f"{split}.jsonl").is_file() else []
                            for split in ("train", "dev", "test"))  # fmt: skip
        return train, training_corpus(data_dir / "corpus.jsonl", test, train + dev, corpus_out)
    from trainer.data import class_balance
    from trainer.evals.labels import read_labels, training_mix

    examples = training_mix(read_labels(labels_file, "train"))
    if not examples:
        raise typer.BadParameter(f"no train question in {labels_file} was ever answered right", param_hint="--labels")
    typer.echo(f"GRPO on {len(examples)} labelled questions: {class_balance(examples)}")
    return examples, labels_training_corpus(labels_file, corpus_out)


def _accelerate_launch(path: Path | None, accumulation: int) -> dict:
    """The accelerate file's process count and ZeRO stage. The recipe is the one source of gradient accumulation:
    a file that sets its own is refused (accelerate's DeepSpeed setting would contradict the recipe's, and
    transformers raises at start-up; left out, DeepSpeed takes the recipe's)."""
    if path is None:
        return {}
    import yaml

    launch = yaml.safe_load(path.read_text()) or {}
    deepspeed = launch.get("deepspeed_config") or {}
    theirs = deepspeed.get("gradient_accumulation_steps")
    if theirs is not None and theirs != "auto" and int(theirs) != accumulation:
        raise typer.BadParameter(
            f"{path} sets gradient_accumulation_steps {theirs}, the recipe {accumulation}: drop it from {path} (the "
            "recipe's gradient_accumulation_steps is the one source)",
            param_hint="--accelerate-config",
        )
    return {"num_processes": launch.get("num_processes"), "zero_stage": int(deepspeed.get("zero_stage", 0))}


def _check_batch_shape(recipe: dict, processes: int) -> None:
    """The answers of one step split into whole prompt groups, on every rank (trainer.train.plan.check_groups)."""
    from trainer.train.plan import check_groups

    batch, accumulation = recipe["per_device_train_batch_size"], recipe["gradient_accumulation_steps"]
    groups = recipe["num_generations"]
    answers = batch * processes * accumulation
    error = check_groups(batch, processes, accumulation, groups)
    if error:
        raise typer.BadParameter(error)
    server = recipe["vllm_server_base_url"] if recipe["rollout_engine"] == "vllm" else None
    typer.echo(
        f"{processes} process(es) x {batch} x {accumulation} = {answers} answers a step: {answers // groups} prompts "
        f"x {groups} generations; rollouts on {recipe['rollout_engine']}" + (f" at {server}" if server else "")
    )


def _check_gpu_layout(
    fields: dict, processes: int, gpus: int, server_gpus: int, gpu_gib: float, zero_stage: int, model: str
) -> None:
    """GPUs for the trainers and the server, a colocated layout that can start, and the memory plan per training
    GPU (trainer.train.plan): refused, with what to change, when any does not hold."""
    from trainer.train.lora import TARGET_MODULES
    from trainer.train.plan import (
        PROMPT_TOKENS,
        Layout,
        check_gpus,
        estimate,
        model_shape,
        sequence_tokens,
        what_to_change,
    )
    from trainer.train.ranks import colocated_placement_error
    from trainer.train.rollout import RolloutConfig

    vllm = fields["rollout_engine"] == "vllm"
    server = vllm and bool(fields["vllm_server_base_url"])
    error = check_gpus(processes, server_gpus if server else 0, gpus) or (
        None if server or not vllm else colocated_placement_error(processes, on_gpu=True)
    )
    if error:
        raise typer.BadParameter(error)
    typer.echo(
        f"GPUs: {processes} training" + (f" + {server_gpus} vLLM server" if server else "") + f" of {gpus}; "
        + ("rollouts on the server" if server else "vLLM colocated" if vllm else "rollouts with HF generate")
    )  # fmt: skip
    shape = model_shape(model)
    if shape is None:
        typer.echo(f"memory: the shape of {model} is unknown here (give --memory-model a local checkpoint)")
        return
    seq = sequence_tokens(fields["max_completion_length"], fields["max_searches"], fields["top_k"],
                          RolloutConfig().passage_chars)  # fmt: skip
    layout = Layout(
        world_size=processes, zero_stage=zero_stage, micro_batch=fields["per_device_train_batch_size"],
        seq_tokens=seq, completion_tokens=seq - PROMPT_TOKENS, lora_r=fields["lora_r"] if fields["lora"] else 0,
        lora_targets=tuple(TARGET_MODULES), gradient_checkpointing=fields["gradient_checkpointing"],
        engine_share=fields["vllm_gpu_memory_utilization"] if vllm and not server else 0.0,
        reference_model=fields["beta"] > 0 and not fields["lora"], gpu_gib=gpu_gib,
    )  # fmt: skip
    plan = estimate(shape, layout)
    typer.echo(f"memory plan for {model}:\n{plan.table()}")
    if not plan.fits:
        raise typer.BadParameter(
            f"{plan.peak_gib:.1f} GiB a training GPU does not fit {gpu_gib:.0f} GiB; change one of:\n- "
            + "\n- ".join(what_to_change(shape, layout))
        )


def register(app: typer.Typer) -> None:
    app.command()(data)
    app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(sft)
    app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(train)
