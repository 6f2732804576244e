"""`trainer decide`: GRPO for the search decision, with credit for both actions (issue #40; trainer/train/decide.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from trainer.commands.options import ConfigHelp, LabelsFile, Resume, build_config, config_fields, read_labels_or_fail
from trainer.runtime import RUNS

WORLD = RUNS / "world"


def decide(
    ctx: typer.Context,
    labels_file: LabelsFile = WORLD / "labels" / "labels.jsonl",
    model: Annotated[str, typer.Option(help="Start model: the world's SFT adapter, or any checkpoint.")] = str(
        WORLD / "sft" / "final"
    ),
    out: Annotated[Path, typer.Option(help="Checkpoints, log.jsonl, history.json, curve.md/png, final/.")] = WORLD
    / "decide",
    resume: Resume = True,
    config_help: ConfigHelp = False,
) -> None:
    """Train the decision after the first answer by GRPO on the labels' train split: rollouts through the service's
    loop, a searching branch for every answer that stopped, the exact gradient of the expected reward over the
    decision (`--credit two_action`; `plain` is GRPO's own, `brier` scores calibration). Every other option is a
    field of DecideConfig (`--steps 300 --questions 16 --generations 4 --reward sem --full`; `--config-help`)."""
    from trainer.evals.curve import curve_point, write_curve
    from trainer.runtime import labels_training_corpus, retriever
    from trainer.train.decide import DecideConfig
    from trainer.train.decide_run import run_decide

    fields = config_fields(ctx, DecideConfig, "decide", config_help)
    if fields is None:
        return
    config = build_config(DecideConfig, fields)
    read_labels_or_fail(labels_file, "train")

    def searcher() -> Any:  # what training searches: no test passage (written beside the run)
        return retriever(labels_training_corpus(labels_file, out / "corpus.jsonl"))

    final = run_decide(model, labels_file, out, config, searcher=searcher, judge=curve_point, resume=resume)
    write_curve(out)
    typer.echo(f"-> {final} ({out}/curve.md, curve.png)")


def decide_curves(
    runs: Annotated[list[str], typer.Option("--run", help="name=<a `trainer decide --out` folder> (repeat).")],
    out: Annotated[Path, typer.Option(help="The plot (png); the table goes beside it as .md.")],
) -> None:
    """Several decide runs' dev curves side by side: P(search) AUROC, searches, over- and under-search by step."""
    from trainer.evals.curve import compare_curves

    named = []
    for item in runs:
        name, sep, folder = item.partition("=")
        if not (sep and name and (Path(folder) / "history.json").is_file()):
            raise typer.BadParameter(f"{item!r}: expected name=<a folder with history.json>", param_hint="--run")
        named.append((name, Path(folder)))
    table = compare_curves(named, out)
    out.with_suffix(".md").write_text(table + "\n")
    typer.echo(table)
    typer.echo(f"-> {out}, {out.with_suffix('.md')}")


def register(app: typer.Typer) -> None:
    app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(decide)
    app.command("decide-curves")(decide_curves)
