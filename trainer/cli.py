"""`trainer`: data -> sft -> train -> eval -> export, each with --help.

Options come from the command line, or from a YAML config file whose sections are the command names
(`trainer --config trainer/configs/cpu-smollm2.yaml train --max-steps 2`, or `--config` after the command: the
command line wins).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from trainer.commands import deciding, evaluation, publishing, training, world


def hoist_config(args: list[str]) -> list[str]:
    """`--config X` moved before the command: it is the group's option, but `trainer train --config X` reads as
    naturally as `trainer --config X train` (no command has a `--config` of its own)."""
    moved: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        if args[i] == "--config" and i + 1 < len(args):
            moved += args[i : i + 2]
            i += 2
            continue
        (moved if args[i].startswith("--config=") else rest).append(args[i])
        i += 1
    return moved + rest


class _Group(TyperGroup):
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_config(args))


app = typer.Typer(
    cls=_Group, help="SEM post-training: GRPO for search efficiency.", no_args_is_help=True, add_completion=False
)
log = logging.getLogger("trainer")


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
    if search_backend:  # the settings every command builds read it (trainer.runtime.retriever)
        os.environ["SEM_SEARCH__BACKEND"] = search_backend
    signal.signal(signal.SIGTERM, _unwind_on_sigterm)
    from trainer.train.ranks import is_main

    # under `accelerate launch` every process runs this: the others log warnings only, or each line comes N times
    level = (logging.DEBUG if verbose else logging.INFO) if is_main() else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if config is not None:
        import yaml

        sections = yaml.safe_load(config.read_text()) or {}
        ctx.default_map = {
            cmd: {k.replace("-", "_"): v for k, v in (opts or {}).items()} for cmd, opts in sections.items()
        }


for phase in (training, deciding, evaluation, publishing, world):
    phase.register(app)


if __name__ == "__main__":
    app()
