"""vLLM on a CPU: bfloat16 vs float32 weights, the same questions answered through `sem.loop` (never search, greedy).

bfloat16 is vLLM's default on CPUs and fast where the CPU computes in it (AVX512-BF16, AMX); on an AVX2-only CPU it
is converted in software. This prints which the machine has, answers/s and tokens/s for each dtype, and how many
greedy answers the two agree on.

    .venv/bin/python bench/cpu_dtype.py [--questions 48] [--out bench/results/cpu_dtype.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from sem.engines import build_engine
from sem.engines.vllm import cpu_flags
from sem.evaldata import benchmarks
from sem.evaldata.benchmarks import default_source
from sem.loop import LoopOptions, SearchLoop, SearchPolicy
from sem.search.bm25 import BM25Backend
from sem.settings import EngineKind, Settings

ROOT = Path(__file__).resolve().parents[1]


async def run(dtype: str, questions: list[str], concurrency: int) -> dict:
    settings = Settings(engine=EngineKind.vllm, dtype=dtype)
    engine = await build_engine(settings)
    loop = SearchLoop(engine, BM25Backend(settings.corpus_path))  # never searched: `never`
    options = LoopOptions(policy=SearchPolicy.never, max_tokens=64)
    gate = asyncio.Semaphore(concurrency)

    async def one(q: str):
        async with gate:
            return await loop.run(q, options)

    try:
        await loop.run(questions[0], options)  # warm-up
        started = time.perf_counter()
        traces = await asyncio.gather(*(one(q) for q in questions))
        took = time.perf_counter() - started
    finally:
        await engine.aclose()
    tokens = sum(t.generated_tokens for t in traces)
    return {"dtype": dtype, "seconds": round(took, 1), "answers_per_s": round(len(traces) / took, 2),
            "tokens_per_s": round(tokens / took, 1), "answers": [t.answer for t in traces]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--questions", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cpu_dtype.json")
    args = parser.parse_args()
    examples = benchmarks.load_source("nq_open", default_source(), "dev", limit=args.questions)
    questions = [e.prompt_text() for e in examples]
    flags = cpu_flags()
    isa = {f: f in flags for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")}
    rows = [asyncio.run(run(d, questions, args.concurrency)) for d in ("bfloat16", "float32")]
    same = sum(a == b for a, b in zip(rows[0]["answers"], rows[1]["answers"], strict=True))
    print("CPU: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in isa.items()))
    print(f"{len(questions)} NQ-open questions, never search, greedy, <= 64 tokens, {args.concurrency} in flight\n")
    print("| dtype | seconds | answers/s | tokens/s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['dtype']} | {r['seconds']} | {r['answers_per_s']} | {r['tokens_per_s']} |")
    print(f"\nthe same greedy answer in both: {same} of {len(questions)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpu": isa, "rows": rows, "same_answers": same}, indent=2) + "\n")


if __name__ == "__main__":
    main()
