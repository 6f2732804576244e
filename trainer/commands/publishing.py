"""Handing a model on: `export` (an adapter merged into its base) and `publish` (the service's default)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from trainer.runtime import RUNS

log = logging.getLogger("trainer")


def export(
    adapter: Annotated[Path, typer.Option(help="A LoRA adapter folder (e.g. runs/grpo/final).")] = RUNS
    / "grpo"
    / "final",
    out: Annotated[Path, typer.Option(help="The merged checkpoint (serve it with SEM_MODEL=...).")] = RUNS / "export",
) -> None:
    """Merge a LoRA adapter into its base model, for the service to load."""
    from trainer.grpo import merge_adapter

    typer.echo(f"merged -> {merge_adapter(adapter, out)}")


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


def register(app: typer.Typer) -> None:
    app.command()(export)
    app.command()(publish)
