"""GRPO step time with HF rollouts and with vLLM rollouts, side by side in one run (same data, model and settings).

Each engine trains `--steps` GRPO steps of `--prompts` prompts x `--generations` answers (<= `--max-tokens` tokens,
LoRA) from the same start model, and the first step is left out of the means (vLLM's first push and warm-up). Per
step: seconds, where they go (rollout, weight push into vLLM, log-prob forwards without gradient, the loss forward,
the rest = backward + optimizer + rewards), rollout tokens/s, and the mean |vLLM log-prob - policy log-prob| per
generated token that TRL logs for its importance-sampling correction.

    .venv/bin/python bench/training.py [--steps 4] [--engines hf,vllm] [--out bench/results/training.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, TrainerCallback

from sem.settings import Settings
from trainer.data import read_jsonl
from trainer.evals.tables import figure, markdown_table
from trainer.runtime import retriever as _retriever
from trainer.train.config import SEMGRPOConfig
from trainer.train.grpo import build_grpo_trainer

ROOT = Path(__file__).resolve().parents[1]


class StepClock(TrainerCallback):
    """Seconds of each step and the rollout totals and TRL metrics at its end."""

    def __init__(self, rollout: Any, forwards: dict[str, float]) -> None:
        self.rollout, self.forwards = rollout, forwards
        self.steps: list[dict[str, float]] = []
        self._last: dict[str, float] = {}
        self._started = 0.0

    def _totals(self) -> dict[str, float]:
        s = self.rollout.stats
        return {"rollout_s": s.rollout_s, "sync_s": s.sync_s, "tokens": s.generated_tokens, **self.forwards}

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._started, self._last = time.perf_counter(), self._totals()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        now = self._totals()
        self.steps.append({"step_s": time.perf_counter() - self._started, **{k: now[k] - self._last[k] for k in now}})

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if logs and "sampling/sampling_logp_difference/mean" in logs and self.steps:
            self.steps[-1]["logp_diff"] = logs["sampling/sampling_logp_difference/mean"]
            self.steps[-1]["logp_diff_max"] = logs["sampling/sampling_logp_difference/max"]


def time_forwards(trainer: Any) -> dict[str, float]:
    """Wrap TRL's log-prob forward to split the old/reference log-probs (no grad) from the loss forward."""
    totals = {"logps_nograd_s": 0.0, "loss_forward_s": 0.0}
    inner = trainer._get_per_token_logps_and_entropies

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            key = "loss_forward_s" if torch.is_grad_enabled() else "logps_nograd_s"
            totals[key] += time.perf_counter() - started

    trainer._get_per_token_logps_and_entropies = timed
    return totals


def run_engine(engine: str, model: str, data: Path, work: Path, opts: argparse.Namespace) -> dict[str, Any]:
    args = SEMGRPOConfig(
        output_dir=str(work / engine), max_steps=opts.steps, per_device_train_batch_size=opts.micro_batch,
        num_generations=opts.generations,
        gradient_accumulation_steps=opts.prompts * opts.generations // opts.micro_batch,
        max_completion_length=opts.max_tokens, temperature=1.0, learning_rate=1e-5, lora=True, lora_r=8,
        save_steps=10_000, rollout_engine=engine,
    )  # fmt: skip
    trainer, rollout = build_grpo_trainer(
        model, read_jsonl(data / "train.jsonl"), _retriever(data / "corpus.jsonl"), args
    )
    clock = StepClock(rollout, time_forwards(trainer))
    trainer.add_callback(clock)
    started = time.perf_counter()
    try:
        trainer.train()
    finally:
        rollout.close()
    measured = clock.steps[1:] or clock.steps  # the first step carries the warm-up

    def mean(key: str) -> float:
        values = [s[key] for s in measured if key in s]
        return statistics.fmean(values) if values else float("nan")

    step = mean("step_s")
    rest = step - mean("rollout_s") - mean("sync_s") - mean("logps_nograd_s") - mean("loss_forward_s")
    return {
        "engine": engine,
        "steps": len(measured),
        "step_s": round(step, 1),
        "rollout_s": round(mean("rollout_s"), 1),
        "sync_s": round(mean("sync_s"), 2),
        "logps_nograd_s": round(mean("logps_nograd_s"), 1),
        "loss_forward_s": round(mean("loss_forward_s"), 1),
        "backward_rest_s": round(rest, 1),
        "rollout_tok_s": round(mean("tokens") / max(mean("rollout_s"), 1e-9), 1),
        "sync_share": round(mean("sync_s") / step, 3),
        "logp_diff": round(mean("logp_diff"), 5) if engine == "vllm" else "n/a (the policy itself)",
        "engine_start_s": round(rollout.stats.engine_start_s, 1),
        "searches_per_answer": round(rollout.stats.searches / max(rollout.stats.completions, 1), 2),
        "wall_s": round(time.perf_counter() - started, 1),
        "per_step": clock.steps,
    }


def run_decide_engine(model: str, labels: Path, work: Path, opts: argparse.Namespace) -> dict[str, Any]:
    """The cheap step of `trainer decide` (issue #40) on the same questions and sizes: rollouts and branches through
    the loop on vLLM, the first turn's loss with the shared prefix, one optimizer step."""
    from trainer.evals.labels import read_labels
    from trainer.runtime import labels_training_corpus
    from trainer.train.decide import DecideConfig, Decider, batches
    from trainer.train.decide_run import engine_model, load_policy, rollout_dtype
    from trainer.train.vllm_rollout import RolloutEngine

    sizes = {"questions": opts.prompts, "generations": opts.generations, "max_tokens": opts.max_tokens}
    if opts.decide_config:  # a run's own recipe (its config.json), so the step benched is that run's
        fields = {f.name for f in dataclasses.fields(DecideConfig)}
        recipe = {k: v for k, v in json.loads(opts.decide_config.read_text()).items() if k in fields}
        config = DecideConfig(**{**recipe, **sizes})
    else:
        config = DecideConfig(**sizes, full=opts.full, read_fresh=opts.read_fresh, engine_dtype=opts.engine_dtype,
                              note=opts.note)  # fmt: skip
    if opts.block_size is not None:
        config.engine_block_size = opts.block_size
    all_labels = read_labels(labels)
    train = [lab for lab in all_labels if lab.split == "train"]
    tokenizer = AutoTokenizer.from_pretrained(engine_model(model))  # an adapter ships no tokenizer: its base's
    policy = load_policy(model, config, None)
    started = time.perf_counter()
    dtype = rollout_dtype(config)
    engine = RolloutEngine(engine_model(model), dtype=dtype, max_num_seqs=max(64, opts.prompts * opts.generations),
                           block_size=config.engine_block_size or None)  # fmt: skip
    engine_start = time.perf_counter() - started
    search = _retriever(labels_training_corpus(labels, work / "corpus.jsonl"))
    steps = []
    try:
        decider = Decider(policy, tokenizer, search, config, engine)
        for step in range(opts.steps):
            steps.append(asdict(decider.step(step + 1, batches(train, config, step))))
    finally:
        engine.close()
    measured = steps[1:] or steps

    def mean(key: str) -> float:
        return statistics.fmean(s[key] for s in measured)

    step_s = mean("step_s")
    traits = [f"vllm {dtype}", "full" if config.full else "LoRA", *(["note"] if config.note else []),
              *(["read fresh"] if config.read_fresh else []),
              *([f"block {config.engine_block_size}"] if config.engine_block_size else [])]  # fmt: skip
    return {
        "engine": f"decide (cheap, {', '.join(traits)})", "steps": len(measured), "step_s": round(step_s, 1),
        "rollout_s": round(mean("rollout_s") + mean("branch_s"), 1), "sync_s": round(mean("push_s"), 2),
        "logps_nograd_s": 0.0, "loss_forward_s": round(mean("forward_s"), 1),
        "backward_rest_s": round(step_s - mean("rollout_s") - mean("branch_s") - mean("push_s") - mean("forward_s"), 1),
        "rollout_tok_s": "-", "sync_share": round(mean("push_s") / step_s, 3), "logp_diff": "n/a (on-policy ratio)",
        "engine_start_s": round(engine_start, 1), "searches_per_answer": round(mean("searched"), 2),
        "wall_s": round(time.perf_counter() - started, 1), "per_step": steps,
    }  # fmt: skip


def markdown(rows: list[dict[str, Any]]) -> str:
    return markdown_table(rows, [k for k in rows[0] if k != "per_step"], cell=str)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    parts = ["rollout_s", "sync_s", "logps_nograd_s", "loss_forward_s", "backward_rest_s"]
    with figure(path, size=(7, 3)) as ax:
        for i, row in enumerate(rows):
            left = 0.0
            for j, part in enumerate(parts):
                ax.barh(i, row[part], left=left, color=f"C{j}", label=part if i == 0 else None)
                left += row[part]
        ax.set_yticks(range(len(rows)), [r["engine"] for r in rows])
        ax.set_xlabel("seconds per GRPO step")
        ax.legend(fontsize=7, loc="lower right")


def write_labelled_data(labels: Path, out: Path) -> None:
    """train.jsonl (the labels' train split, each question's kind from its label) and the labels' corpus."""
    import shutil

    from trainer.evals.labels import as_example, read_labels

    out.mkdir(parents=True, exist_ok=True)
    rows = [asdict(as_example(lab)) for lab in read_labels(labels, "train")]
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.copyfile(labels.with_name("corpus.jsonl"), out / "corpus.jsonl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--micro-batch", type=int, default=4, help="Answers per forward/backward (memory).")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one engine, print its row as JSON
    parser.add_argument("--engines", default="hf,vllm")
    parser.add_argument("--model", default=None, help="Start model (default: the served default).")
    parser.add_argument("--labels", type=Path, default=None,
                        help="Train on these labels' train split (the world's: runs/world/labels/labels.jsonl) "
                        "instead of the shipped sample's mix; the `decide` engine needs them.")  # fmt: skip
    parser.add_argument("--full", action="store_true", help="decide: train every weight, not the adapter.")
    parser.add_argument("--read-fresh", action="store_true", help="decide: searches read fresh (sem.loop).")
    parser.add_argument("--note", action="store_true", help="decide: the confidence note before the decision.")
    parser.add_argument("--decide-config", type=Path, default=None, help="decide: a run's config.json (its "
                        "recipe); the sizes and --block-size above still apply.")  # fmt: skip
    parser.add_argument("--engine-dtype", default="auto", help="decide: the rollout engine's dtype (auto: "
                        "bfloat16 where the CPU computes in it).")  # fmt: skip
    parser.add_argument("--block-size", type=int, default=None, help="decide: the rollout engine's KV-cache "
                        "block (0: vLLM's own; default: trainer decide's).")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "training.json")
    opts = parser.parse_args()
    model = opts.model or Settings().model_path
    if opts.one:  # a child: one engine, its row on the last line of stdout
        engine, work = opts.one.split(",", 1)[0], Path(opts.one.split(",", 1)[1])
        if engine == "decide":
            print(json.dumps(run_decide_engine(model, opts.labels, work, opts)))
        else:
            print(json.dumps(run_engine(engine, model, work / "data", work, opts)))
        return
    with tempfile.TemporaryDirectory(prefix="sem-bench-trainer-") as tmp:
        work = Path(tmp)
        trainer_cli = Path(sys.executable).with_name("trainer")
        if opts.labels:  # the labels' train questions and their corpus, as `trainer data` would write them
            write_labelled_data(opts.labels, work / "data")
        else:
            subprocess.run([str(trainer_cli), "data", "--out", str(work / "data"), "--per-class", "8"], check=True)
        rows = []
        for engine in opts.engines.split(","):  # one process each: neither inherits the other's memory
            child = [sys.executable, __file__, *sys.argv[1:], "--model", model, "--one", f"{engine},{work}"]
            out = subprocess.run(child, check=True, stdout=subprocess.PIPE, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    print(markdown(rows))
    for row in rows[1:]:
        print(f"\n{row['engine']}: {rows[0]['step_s'] / row['step_s']:.2f}x the step speed of {rows[0]['engine']}")
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(opts).items()}
    opts.out.write_text(json.dumps({"model": model, "settings": settings, "rows": rows}, indent=2))
    plot(rows, opts.out.with_suffix(".png"))
    print(f"-> {opts.out}, {opts.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
