"""The options more than one `trainer` command takes, declared once (flag, type, help; each command gives its own
default), and the checks of what they name, so that every command refuses a missing file the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

LABELS_HELP = "Questions labelled by what the model knows (`trainer label`, `trainer world label`)."
LabelsFile = Annotated[Path, typer.Option("--labels", help=LABELS_HELP)]
# typer reads an option's declaration only from the outer Annotated: an optional path needs its own alias
MaybeLabelsFile = Annotated[Path | None, typer.Option("--labels", help=LABELS_HELP)]
Model = Annotated[
    str | None, typer.Option(help="A checkpoint, a LoRA adapter, or 'base' (default: the command's, see its help).")
]
Engine = Annotated[str, typer.Option(help="auto, vllm or hf.")]
MaxTokens = Annotated[int, typer.Option(help="Tokens an answer at most.")]
Resume = Annotated[bool, typer.Option(help="Go on from the last checkpoint in --out.")]
ConfigHelp = Annotated[bool, typer.Option(help="List the run's recipe options and exit.")]
Title = Annotated[str, typer.Option(help="The report's title.")]
WorldDir = Annotated[Path, typer.Option("--world", help="A world folder (`trainer world build`).")]
Samples = Annotated[int, typer.Option(help="Samples per question and policy.")]
Temperature = Annotated[float, typer.Option(help="Sampling temperature of the labelling samples.")]
Concurrency = Annotated[int, typer.Option(help="Questions answered at once.")]
DryRun = Annotated[bool, typer.Option(help="Check and print; change nothing.")]
Source = Annotated[
    str,
    typer.Option(
        "--source",
        "--data-dir",
        help="Where the benchmarks come from: `sample` (shipped, offline), a folder in the original layout "
        "(../shared/data), or `hf` (each dataset's Hugging Face home).",
    ),
]


def read_labels_or_fail(path: Path, split: str | None = None) -> list:
    """The labels of `split` (all when None), or a 4xx-style refusal naming --labels: missing file, or no question."""
    from trainer.evals.labels import read_labels

    if not path.is_file():
        raise typer.BadParameter(f"{path} does not exist: run `trainer label` (or `trainer world label`) first",
                                 param_hint="--labels")  # fmt: skip
    labels = read_labels(path, split)
    if not labels:
        raise typer.BadParameter(f"no {split or 'labelled'} question in {path}", param_hint="--labels")
    return labels


def policies_or_fail(policies: str, allowed: set[str] | dict) -> list[str]:
    """A comma list of policies, each one of `allowed`, or a refusal naming --policies."""
    chosen = [p.strip() for p in policies.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown or not chosen:
        raise typer.BadParameter(f"unknown policies {unknown or policies!r}; choose from {sorted(allowed)}",
                                 param_hint="--policies")  # fmt: skip
    return chosen


OWN_OPTIONS = {"data_dir", "data", "model", "out", "resume", "dry_run", "world_size", "labels", "labels_file", "gpus",
               "server_gpus", "gpu_gib", "accelerate_config", "memory_model"}  # fmt: skip


def config_fields(ctx: typer.Context, cls: type, command: str, print_help: bool) -> dict[str, Any] | None:
    """A recipe's fields from the command line's extra options over the YAML section (the command's own options
    taken out) over the dataclass's defaults; None after printing the recipe's help."""
    from trainer.train.config import parse_config

    from_yaml = {k: v for k, v in (ctx.default_map or {}).items() if k not in OWN_OPTIONS}
    try:
        return parse_config(cls, ctx.args, from_yaml, command=command, print_help=print_help)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc


def build_config(cls: type, fields: dict[str, Any]) -> Any:
    """The recipe itself; its own checks' ValueError as a usage error."""
    try:
        return cls(**fields)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
