"""GRPO on two CPU processes (`accelerate launch --multi_gpu --num_processes 2` without a GPU: torchrun, gloo), the
rank logic of a multi-GPU run, checked on the embedded model without a GPU (issue #31).

    .venv/bin/python bench/two_ranks.py [--out runs/two-ranks] [--steps 2]

builds a tiny data mix (`trainer data` on the shipped sample), launches two training processes on itself, and checks:
- the trainable parameters moved at every step and are bit-identical on both ranks after it (DDP's all-reduce did
  its job; a reward on the answer's length makes sure the advantages are not all zero);
- log.jsonl has one line a step (the main rank writes it);
- the two copies of a prompt split across the ranks (batch 1, 2 generations) were sampled apart (TRL seeds each
  process apart for HF rollouts; SEM's vLLM engines get seed + rank).
Rollouts run on HF `generate` (the CPU default without vLLM); the vLLM push path is covered by the unit tests
(tests/unit/test_rollout_ranks.py) and needs a GPU for the rest (deploy/README.md, "Training on GPUs").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def worker(out: Path, steps: int) -> None:
    """One rank: train `steps` GRPO steps; write what the driver checks to out/rank<N>.json."""
    from transformers import TrainerCallback

    from trainer.data import read_jsonl
    from trainer.runtime import default_model, retriever
    from trainer.train import grpo
    from trainer.train.config import SEMGRPOConfig

    # the base model earns no reward in 24 tokens, and a zero advantage moves nothing: add one that always spreads
    # (the answer's length), or equal parameters across ranks would prove nothing
    rewards = grpo.reward_functions
    grpo.reward_functions = lambda name, **params: tuple(  # type: ignore[assignment]
        a + b for a, b in zip(rewards(name, **params), ([answer_chars], [1.0]), strict=True)
    )

    rank = int(os.environ["RANK"])
    args = SEMGRPOConfig(
        output_dir=str(out / "grpo"), max_steps=steps, per_device_train_batch_size=1, num_generations=2,
        max_completion_length=24, rollout_engine="hf", save_strategy="no", report_to=[], seed=0, lora_r=4,
        temperature=1.0, ddp_backend="gloo",
    )  # fmt: skip
    examples = read_jsonl(out / "data" / "train.jsonl")
    search = retriever(out / "data" / "corpus.jsonl")
    trainer, rollout = grpo.build_grpo_trainer(default_model(), examples, search, args)
    seen: list[dict[str, Any]] = []
    record = rollout._record

    def recording(traces: list[Any]) -> None:  # what this rank sampled
        seen.extend({"question": t.prompt, "text": t.completion} for t in traces)
        record(traces)

    rollout._record = recording  # type: ignore[method-assign]
    digests: list[str] = []

    def digest() -> str:
        h = hashlib.sha256()
        for name, p in sorted(trainer.model.named_parameters()):
            if p.requires_grad:
                h.update(name.encode() + p.detach().cpu().numpy().tobytes())
        return h.hexdigest()

    class Digest(TrainerCallback):
        def on_train_begin(self, *_: Any, **kwargs: Any) -> None:
            digests.append(digest())

        def on_step_end(self, *_: Any, **kwargs: Any) -> None:
            digests.append(digest())

    trainer.add_callback(Digest())
    trainer.train()
    (out / f"rank{rank}.json").write_text(json.dumps({"digests": digests, "samples": seen}))


def answer_chars(completions: list[Any], **_: Any) -> list[float]:
    return [len(str(c)) / 100 for c in completions]


def check(out: Path, steps: int) -> list[str]:
    """What failed, from the ranks' files and the log (empty: all held)."""
    failures = []
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    digests = ranks[0]["digests"]  # before training, then after each step
    if len(digests) != steps + 1 or digests != ranks[1]["digests"]:
        failures.append(f"parameters differ across ranks: {digests} vs {ranks[1]['digests']}")
    if len(set(digests)) != len(digests):
        failures.append("a step left the parameters as they were: the check above proves nothing")
    logged = [json.loads(line) for line in (out / "grpo" / "log.jsonl").open()]
    step_lines = [r["step"] for r in logged if "loss" in r]
    if step_lines != list(range(1, steps + 1)):
        failures.append(f"log lines a step {step_lines}, expected one for each of {steps} steps")
    pairs = list(zip(ranks[0]["samples"], ranks[1]["samples"], strict=True))
    if any(a["question"] != b["question"] for a, b in pairs):
        failures.append("the ranks did not share their prompts (a group was not split across them)")
    if all(a["text"] == b["text"] for a, b in pairs):
        failures.append("the ranks sampled the same answers to the copies of one prompt")
    return failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "two-ranks")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.worker:
        worker(opts.out, opts.steps)
        return
    started = time.perf_counter()
    opts.out.mkdir(parents=True, exist_ok=True)
    (opts.out / "grpo" / "log.jsonl").unlink(missing_ok=True)
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "trainer"), "data", "--out", str(opts.out / "data"), "--per-class", "2",
                    "--dev-per-class", "1"], check=True, cwd=ROOT)  # fmt: skip
    # --multi_gpu is accelerate's torchrun launcher: without a GPU each process trains on the CPU over gloo (--cpu
    # would start one process only)
    subprocess.run([str(bin_dir / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                    "--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
                    __file__, "--worker", "--out", str(opts.out), "--steps", str(opts.steps)],
                   check=True, cwd=ROOT)  # fmt: skip
    failures = check(opts.out, opts.steps)
    print(f"two ranks, {opts.steps} GRPO steps on CPU: {time.perf_counter() - started:.0f} s")
    for failure in failures:
        print(f"FAILED: {failure}")
    print("all checks held" if not failures else f"{len(failures)} check(s) failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
