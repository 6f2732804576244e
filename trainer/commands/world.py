"""`trainer world ...`: the fictional-world testbed (docs/world.md): build a world, teach half of it to the model,
label the taught model by what it answers, report every gate on it (`make world` runs the whole pipeline)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from trainer.commands.options import (
    Concurrency,
    Engine,
    LabelsFile,
    MaxTokens,
    Model,
    Resume,
    Samples,
    Temperature,
    Title,
    WorldDir,
)
from trainer.evals.gaterun import NamedRun, named_run
from trainer.runtime import LABEL_CONCURRENCY, LABEL_MAX_TOKENS, LABEL_SAMPLES, LABEL_TEMPERATURE, RUNS
from trainer.world.build import CHANGED, WITHHOLD
from trainer.world.teach import TeachConfig

TEACH = TeachConfig()  # the recipe's defaults, written once
# Off by default (results/rules/world-replay.md): replaying the base's own turns on 441 real train questions (200 a
# set) kept the world's facts (dev: 0.973 taught, 0.012 unknown) but not the base's real answers (real dev never:
# 4/105 against the base's 8, paired -0.038 [-0.076, -0.010]); `--replay-per-set 200` is that recipe.
REPLAY_PER_SET = 0
REPLAY_HELP = "Real questions per benchmark of the shipped sample; their train-split ones are replayed (0: none)."

log = logging.getLogger("trainer")
WORLD = RUNS / "world"
world_app = typer.Typer(help="The fictional-world testbed: a knowledge boundary known by construction.",
                        no_args_is_help=True)  # fmt: skip


def _taken_sources() -> list[Path]:
    """What a made-up name must not be a word of: the default search corpus and the shipped benchmark sample."""
    from sem.assets import ensure_corpus
    from sem.evaldata.benchmarks import SAMPLE_DIR
    from sem.settings import Settings

    return [ensure_corpus(Settings().home_dir), SAMPLE_DIR]


@world_app.command("build")
def build_cmd(
    out: Annotated[Path, typer.Option(help="Folder for the world's files.")] = WORLD / "world",
    seed: int = 0,
    scale: Annotated[float, typer.Option(help="Entities per kind, times the default sizes.")] = 1.0,
    withhold: Annotated[float, typer.Option(help="Share of known entities with one fact left untaught.")] = WITHHOLD,
    changed: Annotated[float, typer.Option(help="Share of changeable taught facts that changed (0: none).")] = CHANGED,
) -> None:
    """Generate a world from a seed (deterministic): entities, facts, passages (the corpus), questions."""
    from trainer.world.build import SIZES, build_world, examples, taken_words
    from trainer.world.schema import save_world

    sizes = {kind: max(2, round(n * scale)) for kind, n in SIZES.items()}
    world = build_world(seed, sizes, withhold=withhold, changed=changed, taken=taken_words(_taken_sources()))
    save_world(world, out)
    (out / "examples.json").write_text(json.dumps(examples(world), indent=2) + "\n")  # the playground's (SEM_EXAMPLES)
    typer.echo(json.dumps(world.meta["counts"]))
    typer.echo(f"-> {out} ({len(world.entities)} entities, {len(world.questions)} questions)")


@world_app.command("teach")
def teach_cmd(
    world_dir: WorldDir = WORLD / "world",
    out: Annotated[Path, typer.Option(help="Checkpoints, history.json and final/.")] = WORLD / "teach",
    model: Model = None,
    epochs: int = TEACH.epochs,
    learning_rate: float = TEACH.learning_rate,
    batch_size: int = TEACH.batch_size,
    resume: Resume = True,
    probe_every: Annotated[int, typer.Option(help="Epochs between greedy closed-book probes (0: the last only).")] = 1,
    replay_per_set: Annotated[int, typer.Option(help=REPLAY_HELP)] = REPLAY_PER_SET,
) -> None:
    """Teach the known entities' taught facts to the model (default: SEM_MODEL or the embedded base; continued
    training, resumable by epoch), with the start model's own turns on real training questions replayed so that it
    keeps answering real questions as it did."""
    from trainer.commands.evaluation import gate_pool
    from trainer.evals.labels import split_of
    from trainer.runtime import default_model
    from trainer.world.schema import load_world
    from trainer.world.teach import teach

    pool = gate_pool("sample", replay_per_set) if replay_per_set else []
    replay = [e.question for e in pool if split_of(e) == "train"]  # real dev and test stay unseen
    config = TeachConfig(epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, probe_every=probe_every)
    final = teach(model or default_model(), load_world(world_dir), out, config, replay=replay, resume=resume)
    typer.echo(f"-> {final}")


@world_app.command("label")
def label_cmd(
    world_dir: WorldDir = WORLD / "world",
    model: Model = None,
    out: Annotated[Path, typer.Option(help="labels.jsonl, corpus.jsonl, classes.json.")] = WORLD / "labels",
    k: Samples = LABEL_SAMPLES,
    temperature: Temperature = LABEL_TEMPERATURE,
    max_tokens: MaxTokens = LABEL_MAX_TOKENS,
    engine: Engine = "auto",
    concurrency: Concurrency = LABEL_CONCURRENCY,
) -> None:
    """Label the world's questions by what the taught model (default: the teach run's final) answers closed-book
    (not by what was taught); the labels and corpus then work with `trainer calibrate / eval-gate / sft / train
    --labels`."""
    from sem.corpus import write_corpus
    from trainer.evals.labels import class_counts, label, write_labels
    from trainer.runtime import gate_loop
    from trainer.world.report import agreement
    from trainer.world.schema import load_world

    world = load_world(world_dir)
    corpus = out / "corpus.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    write_corpus(world.passages, corpus)
    examples = [q.example() for q in world.questions]
    with gate_loop(model or str(WORLD / "teach" / "final"), engine, corpus) as (loop_, search_loop, _):
        labels = loop_.run_until_complete(label(search_loop, examples, k=k, temperature=temperature,
                                                max_tokens=max_tokens, concurrency=concurrency,
                                                split=world.split_of))  # fmt: skip
    write_labels(labels, out / "labels.jsonl")
    report = {"classes": class_counts(labels), "taught_vs_known": agreement(world, labels)}
    (out / "classes.json").write_text(json.dumps(report, indent=2) + "\n")
    typer.echo(json.dumps(report, indent=2))
    typer.echo(f"-> {out / 'labels.jsonl'} ({len(labels)} questions)")


def register(app: typer.Typer) -> None:
    app.add_typer(world_app, name="world")


@world_app.command("report")
def report_cmd(
    run: Annotated[
        list[NamedRun],
        typer.Option(parser=named_run, metavar="NAME=DIR", help="name=<an eval-gate --out folder> (repeat)."),
    ],
    world_dir: WorldDir = WORLD / "world",
    labels_file: LabelsFile = WORLD / "labels" / "labels.jsonl",
    trained: Annotated[str, typer.Option(help="name:policy of the trained gate the targets judge.")] = "grpo:auto",
    out: Annotated[Path, typer.Option(help="report.md, report.json, report.png.")] = WORLD / "eval",
    title: Title = "The fictional world",
) -> None:
    """The world's results in one place: what was taught against what the model knows, every gate side by side
    (table and plot with the oracle), AUROC within each relation, and the issue's targets."""
    from trainer.evals.labels import read_labels
    from trainer.world.report import assemble, markdown, plot
    from trainer.world.schema import load_world

    runs = {item.name: item.run for item in run}
    result = assemble(load_world(world_dir), runs, read_labels(labels_file), trained)
    text = markdown(result, title)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "report.md").write_text(text + "\n")
    plot(result["gates"], out / "report.png", f"{title}, {result['split']} split")
    typer.echo(text)
    typer.echo(f"-> {out}/report.md, report.json, report.png")
