"""Handing a model on: `export` (an adapter merged into its base), `publish` (the service's default, by hand) and
`promote` (the default replaced only when a candidate wins by the committed rule); and a judged run into the
committed results (`publish-run`)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from trainer.commands.options import DryRun
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


def extract(
    model: Annotated[str, typer.Option(help="The fine-tuned model: a checkpoint, or an adapter over one.")],
    out: Annotated[Path, typer.Option(help="The adapter folder to write.")],
    budget_mb: Annotated[float, typer.Option(help="The adapter's size in bf16; ranks per layer by energy.")] = 39.0,
    rank: Annotated[int | None, typer.Option(help="One rank everywhere instead of a budget.")] = None,
    start: Annotated[str, typer.Option(help="What it was fine-tuned from ('base': the embedded base).")] = "base",
    distill_world: Annotated[
        Path | None, typer.Option(help="Then train the adapter to match the model on this world's taught facts.")
    ] = None,
    epochs: Annotated[int, typer.Option(help="Distillation epochs.")] = 1,
) -> None:
    """Cut a full fine-tune down to one LoRA adapter over its start model (an SVD of each linear layer's change,
    ranks allocated by energy within a size), optionally distilled back towards the model where it was taught, so
    that it ships and serves as an adapter; extract.json beside it says how much of the change it keeps."""
    from trainer.runtime import servable
    from trainer.train.extract import extract_adapter
    from trainer.world.distill import distill

    with servable(start) as start_path:
        report, _, _ = extract_adapter(str(start_path), model, out, budget_mb=budget_mb, rank=rank)
        if distill_world is not None:
            pieces, prefix = world_pieces(model, distill_world, out)
            report = distill(out, str(start_path), model, pieces, prefix, report, epochs=epochs)
    size = (out / "adapter_model.safetensors").stat().st_size
    typer.echo(f"adapter -> {out} ({size / 1e6:.1f} MB, {report.parameters:,} parameters, "
               f"{100 * report.kept_energy:.1f}% of the linear layers' change kept)")  # fmt: skip


def world_pieces(model: str, world_dir: Path, out: Path) -> tuple[list, list[int]]:
    """What the extract is distilled on: the world's facts as taught, and the model's own traces (searching, greedy)
    on the world's train questions, which carry reading. The world's passages and examples go into the adapter's
    folder: the corpus it searches when served, the playground's examples."""
    import asyncio
    import shutil

    from transformers import AutoTokenizer

    from sem.loop import LoopOptions, SearchPolicy
    from trainer.runtime import gate_loop
    from trainer.world.distill import trace_pieces
    from trainer.world.schema import load_world
    from trainer.world.teach import teaching_texts, tokenize

    world = load_world(world_dir)
    shutil.copyfile(world_dir / "passages.jsonl", out / "corpus.jsonl")
    if (world_dir / "examples.json").is_file():
        shutil.copyfile(world_dir / "examples.json", out / "examples.json")
    pieces, prefix = tokenize(teaching_texts(world), AutoTokenizer.from_pretrained(model))
    train = [q.question for q in world.questions if q.split == "train"]
    options = LoopOptions(policy=SearchPolicy.always)
    with gate_loop(model, "vllm", out / "corpus.jsonl") as (loop, search_loop, _):

        async def answer_all() -> list:
            return await asyncio.gather(*(search_loop.run(q, options) for q in train))

        traces = loop.run_until_complete(answer_all())
    return pieces + trace_pieces(traces), prefix


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
    from sem.assets import BASE_MODEL_ID, TUNED_ADAPTER
    from sem.gate import gate_path
    from trainer.train.lora import publish_adapter, stamp_card

    if gate is None and gate_path(adapter).is_file():  # calibrated as an adapter: its own gate goes with it
        gate = gate_path(adapter)
    if gate is not None and not gate.is_file():
        raise typer.BadParameter(f"{gate} is not a file", param_hint="--gate")
    dest = publish_adapter(adapter, out or TUNED_ADAPTER, base_id=BASE_MODEL_ID, gate=gate)
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
    dry_run: DryRun = False,
    out: Annotated[Path | None, typer.Option(help="Default: where `sem assets` looks for SEM's adapter.")] = None,
) -> None:
    """Publish the candidate as the served default only if it beats the current one by the committed rule
    (trainer/evals/promotion.py) on the same dev questions; otherwise keep the current one and say why."""
    from trainer.evals.ledger import SplitError, committed_rule
    from trainer.evals.promotion import verdict

    try:
        committed = committed_rule(rule)
    except SplitError as exc:
        raise typer.BadParameter(str(exc), param_hint="--rule") from exc
    sides = (("candidate", candidate, candidate_policy), ("current", current, current_policy))
    runs = {name: _dev_answers(name, folder, policy) for name, folder, policy in sides}
    result = verdict(runs["candidate"], runs["current"])
    typer.echo(json.dumps(result.measures, indent=2))
    typer.echo(("WINS: " if result.wins else "stays: ") + "; ".join(result.reasons))
    if not result.wins or dry_run:
        return
    provenance = (f"Promoted by `trainer promote` under {committed.path} (commit {committed.commit[:10]}): "
                  f"{'; '.join(result.reasons)}.")  # fmt: skip
    _publish(adapter, out, None, provenance)


def _dev_answers(name: str, folder: Path, policy: str) -> list:
    """One side's `policy` answers from its eval-gate folder, refused (naming the option) when they are not dev's."""
    from trainer.evals.gaterun import GateRun, GateRunError

    try:
        run = GateRun.read(folder)
    except GateRunError as exc:
        raise typer.BadParameter(str(exc), param_hint=f"--{name}") from exc
    if run.split == "test":
        raise typer.BadParameter("promotion is decided on dev, never on the test split", param_hint=f"--{name}")
    answers = run.answers(policy)
    if not answers:
        raise typer.BadParameter(f"no {policy!r} answers in {folder}", param_hint=f"--{name}-policy")
    return answers


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
    app.command()(extract)
    app.command()(publish)
    app.command()(promote)
    app.command("publish-run")(publish_run)
