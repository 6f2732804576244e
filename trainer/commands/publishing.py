"""Handing a model on: `export` (an adapter merged into its base), `publish` (the service's default, by hand) and
`promote` (the default replaced only when a candidate wins by the committed rule); and a judged run into the
committed results (`publish-run`)."""

from __future__ import annotations

import json
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
    from trainer.train.lora import merge_adapter

    typer.echo(f"merged -> {merge_adapter(adapter, out)}")


def publish(
    adapter: Annotated[Path, typer.Option(help="The trained adapter.")] = RUNS / "grpo" / "final",
    out: Annotated[Path | None, typer.Option(help="Default: where `sem assets` looks for SEM's adapter.")] = None,
    gate: Annotated[
        Path | None,
        typer.Option(help="Its calibration (default: the adapter's own, from `trainer calibrate --model <adapter>`)."),
    ] = None,
) -> None:
    """Make an adapter the service's default: copied (bf16) to where `sem assets` merges it into the base, by hand
    (`trainer promote` does it only when the candidate wins by the committed rule)."""
    _publish(adapter, out, gate, "Published by hand with `trainer publish` (no promotion rule applied).")


def _publish(adapter: Path, out: Path | None, gate: Path | None, provenance: str) -> None:
    from sem.assets import TUNED_ADAPTER
    from sem.gate import gate_path
    from trainer.train.lora import publish_adapter, stamp_card

    if gate is None and gate_path(adapter).is_file():  # calibrated as an adapter: its own gate goes with it
        gate = gate_path(adapter)
    if gate is not None and not gate.is_file():
        raise typer.BadParameter(f"{gate} is not a file", param_hint="--gate")
    dest = publish_adapter(adapter, out or TUNED_ADAPTER, base_id="HuggingFaceTB/SmolLM2-135M-Instruct", gate=gate)
    stamp_card(dest, f"{provenance} From {adapter}.")
    size = (dest / "adapter_model.safetensors").stat().st_size
    typer.echo(f"adapter -> {dest} ({size / 1e6:.1f} MB); `sem assets` merges it into the default model")


def promote(
    adapter: Annotated[Path, typer.Option(help="The trained candidate adapter.")] = RUNS / "grpo" / "final",
    candidate: Annotated[Path, typer.Option(help="`trainer eval-gate --out` of the candidate, on dev.")] = RUNS
    / "candidate",
    current: Annotated[Path, typer.Option(help="`trainer eval-gate --out` of the served default, same dev.")] = RUNS
    / "current",
    candidate_policy: Annotated[str, typer.Option(help="The policy the candidate would be served with.")] = "auto",
    current_policy: Annotated[str, typer.Option(help="The served default's policy.")] = "auto",
    rule: Annotated[Path, typer.Option(help="The rule's committed text.")] = Path("results/rules/default-model.md"),
    dry_run: Annotated[bool, typer.Option(help="Judge only; publish nothing.")] = False,
    out: Annotated[Path | None, typer.Option(help="Default: where `sem assets` looks for SEM's adapter.")] = None,
) -> None:
    """Publish the candidate as the served default only if it beats the current one by the committed rule
    (trainer/evals/promotion.py) on the same dev questions; otherwise keep the current one and say why."""
    from trainer.evals.gaterun import GateRun, GateRunError
    from trainer.evals.ledger import SplitError, committed_rule
    from trainer.evals.promotion import verdict

    try:
        committed = committed_rule(rule)
    except SplitError as exc:
        raise typer.BadParameter(str(exc), param_hint="--rule") from exc
    runs = {}
    for name, folder, policy in (("candidate", candidate, candidate_policy), ("current", current, current_policy)):
        try:
            run = GateRun.read(folder)
        except GateRunError as exc:
            raise typer.BadParameter(str(exc), param_hint=f"--{name}") from exc
        if run.split == "test":
            raise typer.BadParameter("promotion is decided on dev, never on the test split", param_hint=f"--{name}")
        runs[name] = run.answers(policy)
        if not runs[name]:
            raise typer.BadParameter(f"no {policy!r} answers in {folder}", param_hint=f"--{name}-policy")
    result = verdict(runs["candidate"], runs["current"])
    typer.echo(json.dumps(result.measures, indent=2))
    typer.echo(("WINS: " if result.wins else "stays: ") + "; ".join(result.reasons))
    if not result.wins or dry_run:
        return
    provenance = (f"Promoted by `trainer promote` under {committed.path} (commit {committed.commit[:10]}): "
                  f"{'; '.join(result.reasons)}.")  # fmt: skip
    _publish(adapter, out, None, provenance)


def publish_run(
    run: Annotated[Path, typer.Option(help="A judged run under runs/ (an eval-gate, world report or eval --out).")],
    to: Annotated[Path, typer.Option(help="Its folder under results/ (created; commit it).")],
    rule: Annotated[Path, typer.Option(help="The committed rule that judged it (copied beside it as rule.md).")],
    replace: Annotated[bool, typer.Option(help="Overwrite files already in --to (nothing else is touched).")] = False,
) -> None:
    """Copy a judged run into the committed results with its rule: the one way results/ changes (no pipeline
    writes there)."""
    from trainer.evals.ledger import SplitError
    from trainer.evals.publish import publish_run as publish

    try:
        provenance = publish(run, to, rule, replace=replace)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--rule" if isinstance(exc, SplitError) else "--run") from exc
    typer.echo(f"-> {to}: {len(provenance['files'])} files, rule.md, published.json (commit them)")


def register(app: typer.Typer) -> None:
    app.command()(export)
    app.command()(publish)
    app.command()(promote)
    app.command("publish-run")(publish_run)
