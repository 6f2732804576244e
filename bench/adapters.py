"""Several models from one engine (issue #42): what vLLM's multi-LoRA costs on this CPU, and whether the world's
adapter answers over HTTP as `trainer eval-gate` measured it.

1. Throughput: the same questions at 8 clients, `always` (a search and two generations each), against (a) the merged
   default model served alone (no LoRA), and (b) the base with SEM's adapter and the world's served together (as
   `make serve` runs them), the requests alternating between the two adapters. Answers/s and tokens/s, p50/p95.
   and (c) `SEM_ADAPTER_ENGINES=own`: the merged default and the world's adapter merged, each on a vLLM engine of its
   own bound to its own cores.
2. The world adapter through the service, per gate (`never`, `always`, `confidence` at its calibrated threshold), on
   the world's dev questions: accuracy and searches, beside the committed `eval-gate` run of the same adapter
   (results/world/adapter-dev), with its intervals.

    .venv/bin/python bench/adapters.py [--questions 96]

Needs the world's labels (`make world`); writes bench/results/adapters.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import httpx
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from serving import start_service, world_test_questions  # noqa: E402 - the bench folder's own helper

from sem.assets import TUNED_ADAPTER  # noqa: E402
from trainer.evals.labels import Label, is_right, read_labels  # noqa: E402
from trainer.evals.tables import markdown_table  # noqa: E402

WORLD = ROOT / "sem" / "adapters" / "sem-world-135m"
DEFAULT, WORLD_NAME = "SmolLM2-135M-Instruct-SEM", "sem-world-135m"
SERVED_TOGETHER = {"SEM_MODEL": "base", "SEM_DEFAULT_MODEL": DEFAULT,
                   "SEM_ADAPTERS": f"{DEFAULT}={TUNED_ADAPTER},{WORLD_NAME}={WORLD}"}  # fmt: skip
# SEM_ADAPTER_ENGINES=own: the merged default on one engine, the world's adapter merged on another, a core each
OWN_ENGINES = {"SEM_ADAPTERS": f"{WORLD_NAME}={WORLD}", "SEM_ADAPTER_ENGINES": "own"}
DEFAULT_MERGED = None  # the engine's own model: a request naming none
MAX_TOKENS = 64  # as `trainer eval-gate` answers the world


async def answer_all(base: str, labels: list[Label], gate: str, clients: int, models: list[str | None]) -> dict:
    """Each question once, `clients` in flight, question i to `models[i % len(models)]`."""
    slots = asyncio.Semaphore(clients)
    rows: list[dict] = []
    async with httpx.AsyncClient(base_url=base, timeout=900) as client:

        async def one(i: int, lab: Label) -> None:
            body = {"question": lab.example.prompt_text(), "search": gate, "max_searches": 1, "max_tokens": MAX_TOKENS}
            if models[i % len(models)]:
                body["model"] = models[i % len(models)]
            async with slots:
                started = time.perf_counter()
                reply = await client.post("/v1/answer", json=body)
                seconds = time.perf_counter() - started
            data = reply.raise_for_status().json()
            rows.append({"seconds": seconds, "searches": data["search_count"], "right": is_right(data["answer"],
                         lab.example), "tokens": data["usage"]["completion_tokens"]})  # fmt: skip

        began = time.perf_counter()
        await asyncio.gather(*(one(i, lab) for i, lab in enumerate(labels)))
        wall = time.perf_counter() - began
    seconds = sorted(r["seconds"] for r in rows)
    n = len(rows)
    return {"questions": n, "answers_per_s": round(n / wall, 3),
            "tokens_per_s": round(sum(r["tokens"] for r in rows) / wall, 1),
            "p50_s": round(statistics.median(seconds), 2), "p95_s": round(seconds[int(0.95 * (n - 1))], 2),
            "accuracy": round(sum(r["right"] for r in rows) / n, 3),
            "searches": round(sum(r["searches"] for r in rows) / n, 3)}  # fmt: skip


def committed(policy: str, path: Path) -> dict:
    rows = json.loads(path.read_text())["rows"] if path.is_file() else []
    row = next((r for r in rows if r.get("policy") == policy), {})
    return {"eval_gate_accuracy": row.get("accuracy"), "eval_gate_ci": row.get("accuracy_ci"),
            "eval_gate_searches": row.get("searches_per_question")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, default=ROOT / "runs/world/labels/labels.jsonl")
    parser.add_argument("--questions", type=int, default=96, help="world test questions for the throughput rows")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--gates", default="never,always,confidence", help="the world adapter's dev run ('': none)")
    parser.add_argument("--committed", type=Path, default=ROOT / "results/world/adapter-dev/gate.json")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/adapters.json")
    opts = parser.parse_args()
    load = world_test_questions(opts.labels)
    load = load[: opts.questions]
    dev = read_labels(opts.labels, "dev")
    corpus = str(WORLD / "corpus.jsonl")  # what the world adapter searches when served; the merged default too here
    throughput, served = [], []
    setups = (("merged default alone", {"SEM_CORPUS": corpus}, [None]),
              ("base + SEM + world adapters, alternating", {**SERVED_TOGETHER, "SEM_CORPUS": corpus},
               [DEFAULT, WORLD_NAME]),
              ("merged default + world on an engine of its own (a core each), alternating", {**OWN_ENGINES,
               "SEM_CORPUS": corpus}, [DEFAULT_MERGED, WORLD_NAME]))  # fmt: skip
    for name, env, models in setups:
        proc, base = start_service({**env, "SEM_REDIS_URL": "", "SEM_CACHE_LRU_SIZE": "0"})
        try:
            asyncio.run(answer_all(base, load[:8], "always", opts.clients, models))  # warm-up, not counted
            throughput.append({"served": name, "clients": opts.clients,
                               **asyncio.run(answer_all(base, load, "always", opts.clients, models))})  # fmt: skip
            if len(models) > 1 and "SEM_ADAPTER_ENGINES" not in env:
                for gate in tqdm([g for g in opts.gates.split(",") if g], desc="the world adapter over HTTP, dev"):
                    got = asyncio.run(answer_all(base, dev, gate, opts.clients, [WORLD_NAME]))
                    served.append({"gate": gate, "questions": got["questions"], "accuracy": got["accuracy"],
                                   "searches": got["searches"], **committed(gate, opts.committed)})  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    ratio = throughput[1]["answers_per_s"] / throughput[0]["answers_per_s"]
    own = throughput[2]["answers_per_s"] / throughput[0]["answers_per_s"]
    table = markdown_table(throughput, cell=str)
    table += f"\n\nTwo models together / merged alone, answers/s at {opts.clients} clients: {ratio:.2f}x "
    table += f"(multi-LoRA), {own:.2f}x (engines of their own)\n\n"
    table += markdown_table(served, cell=str)
    print(table)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps({"throughput": throughput, "ratio": round(ratio, 3), "ratio_own": round(own, 3),
                                    "served": served},
                                   indent=1) + "\n")  # fmt: skip
    opts.out.with_suffix(".md").write_text(table + "\n")
    print(f"-> {opts.out}, {opts.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
