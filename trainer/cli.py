"""`trainer`: data -> sft -> train -> eval -> export, each with --help.

Options come from the command line, or from a YAML config file whose sections are the command names
(`trainer --config trainer/configs/cpu-smollm2.yaml train --max-steps 2`: the command line wins).
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="SEM post-training: GRPO for search efficiency.", no_args_is_help=True, add_completion=False)
log = logging.getLogger("trainer")

RUNS = Path("runs")


class Reward(StrEnum):
    sem = "sem"
    ikea = "ikea"
    otc = "otc"
    em = "em"


class Labelling(StrEnum):
    fixed = "fixed"  # MuSiQue/HotpotQA need search, MMLU is known (SEM's mix)
    model = "model"  # the base model's closed-book pass rate decides (IKEA's mode)


@app.callback()
def main(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="YAML file with a section per command.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
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
    from sem.cache import CachedSearch
    from sem.search.bm25 import BM25Backend

    backend = BM25Backend(corpus)
    backend.load_sync()
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
    loop = SearchLoop(engine, retriever=None)  # type: ignore[arg-type]  # never searches

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
) -> None:
    """Warm up the template with teacher traces written through the real loop (results masked)."""
    from trainer.data import read_jsonl
    from trainer.sft import run_sft

    final = run_sft(
        model or _default_model(), read_jsonl(data_dir / "train.jsonl"), _retriever(data_dir / "corpus.jsonl"), out,
        max_steps=max_steps, batch_size=batch_size, learning_rate=learning_rate, save_steps=save_steps, resume=resume,
        lora_r=lora_r or None,
    )  # fmt: skip
    typer.echo(f"sft model -> {final}")


@app.command()
def train(
    data_dir: Annotated[Path, typer.Option("--data", help="Output of `trainer data`.")] = RUNS / "data",
    model: Annotated[str | None, typer.Option(help="Start model (default: runs/sft/final when present).")] = None,
    out: Annotated[Path, typer.Option(help="Checkpoints, log.jsonl and the final model.")] = RUNS / "grpo",
    reward: Reward = Reward.sem,
    tau: float = 0.8,
    max_steps: int = 200,
    batch_size: int = 4,
    num_generations: int = 4,
    max_completion_length: int = 128,
    temperature: float = 1.0,
    learning_rate: float = 1e-5,
    beta: float = 0.0,
    loss_type: str = "dapo",
    lora: Annotated[bool, typer.Option(help="Train a LoRA adapter (else the full model).")] = True,
    lora_r: Annotated[int, typer.Option(help="LoRA rank (a start model that is an adapter keeps its own).")] = 8,
    max_searches: int = 2,
    save_steps: int = 25,
    resume: Annotated[bool, typer.Option(help="Continue from the last checkpoint in --out.")] = False,
) -> None:
    """GRPO with a search-efficiency reward; rollouts run sem.loop on the policy."""
    from trainer.data import read_jsonl
    from trainer.grpo import GRPOSettings, run_grpo

    start = model or (str(RUNS / "sft" / "final") if (RUNS / "sft" / "final").is_dir() else _default_model())
    settings = GRPOSettings(
        reward=reward.value, tau=tau, max_steps=max_steps, batch_size=batch_size, num_generations=num_generations,
        max_completion_length=max_completion_length, temperature=temperature, learning_rate=learning_rate,
        beta=beta, loss_type=loss_type, lora=lora, lora_r=lora_r, max_searches=max_searches, save_steps=save_steps,
    )  # fmt: skip
    final = run_grpo(
        start, read_jsonl(data_dir / "train.jsonl"), _retriever(data_dir / "corpus.jsonl"), out, settings,
        resume=resume,
    )  # fmt: skip
    typer.echo(f"grpo model -> {final}  (log: {out / 'log.jsonl'})")


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
) -> None:
    """Make an adapter the service's default: copied (bf16) to where `sem assets` merges it into the base."""
    from sem.assets import TUNED_ADAPTER
    from trainer.lora import publish_adapter

    dest = publish_adapter(adapter, out or TUNED_ADAPTER, base_id="HuggingFaceTB/SmolLM2-135M-Instruct")
    size = (dest / "adapter_model.safetensors").stat().st_size
    typer.echo(f"adapter -> {dest} ({size / 1e6:.1f} MB); `sem assets` merges it into the default model")


if __name__ == "__main__":
    app()
