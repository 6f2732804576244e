"""Search benchmark: recall of supporting paragraphs (bm25 vs dense), index build time and query latency at 10k and
1M passages, cached vs uncached latency (in-process and Redis). Prints Markdown tables; writes JSON.

    .venv/bin/python bench/search.py [--data ../shared/data] [--large 1000000] [--out bench/results/search.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from sem.cache import CachedSearch, LRUStore, RedisStore
from sem.corpus import iter_passages, write_corpus
from sem.evaldata import benchmarks
from sem.evaldata.benchmarks import default_source
from sem.search.bm25 import BM25Backend
from sem.search.dense import DenseBackend
from sem.settings import Settings
from trainer.evals.tables import markdown_table


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def default_backends(corpus: Path) -> list:
    return [BM25Backend(corpus), DenseBackend(corpus)]


def recall_table(data_dir: Path, work: Path, make_backends: Callable[[Path], list] = default_backends) -> list[dict]:
    """Recall@k of supporting paragraphs over the union of the dev rows' paragraphs."""
    questions = {
        "musique": benchmarks.load_source("musique", data_dir, "dev"),
        "hotpotqa": benchmarks.load_source("hotpotqa", data_dir, "dev"),
    }
    everything = [*questions["musique"], *questions["hotpotqa"], *benchmarks.load_source("2wiki", data_dir, "dev")]
    corpus = work / "dev-paragraphs.jsonl"
    n = write_corpus(benchmarks.paragraph_corpus(everything), corpus)
    rows = []
    for backend in make_backends(corpus):
        started = time.perf_counter()
        backend.load_sync()
        build_s = time.perf_counter() - started
        for name, qs in questions.items():
            started = time.perf_counter()
            found = backend.search_sync([q.question for q in qs], 10)
            per_query_ms = (time.perf_counter() - started) * 1000 / len(qs)
            row = {"backend": backend.name, "benchmark": name, "passages": n, "questions": len(qs),
                   "build_s": round(build_s, 2), "ms_per_query_batched": round(per_query_ms, 2)}  # fmt: skip
            for k in (1, 5, 10):
                recalls = []
                for q, top in zip(qs, found, strict=True):
                    gold = {(p.title, p.text) for p in q.paragraphs if p.supporting}
                    got = {(p.title, p.text) for p in top[:k]}
                    recalls.append(len(gold & got) / len(gold))
                row[f"recall@{k}"] = round(statistics.mean(recalls), 3)
            rows.append(row)
    return rows


def sliding_corpus(source: Path, out: Path, size: int, words: int = 24) -> int:
    """`size` passages cut from real text: windows of `words` words sliding one word at a time (wrapping)."""
    text = " ".join(p.text for p in iter_passages(source)).split()

    def rows():
        for i in tqdm(range(size), desc=f"synthesising {size:,} passages", unit=" p", mininterval=2):
            start = i % (len(text) - words)
            yield {"id": f"win{i}", "title": "", "text": " ".join(text[start : start + words])}

    return write_corpus(rows(), out)


def latency_table(corpus: Path, label: str, queries: list[str], backends: list) -> list[dict]:
    rows = []
    for backend in backends:
        started = time.perf_counter()
        backend.load_sync()
        build_s = time.perf_counter() - started
        times = []
        for q in queries:
            t = time.perf_counter()
            backend.search_sync([q], 5)
            times.append((time.perf_counter() - t) * 1000)
        row = {"backend": backend.name, "corpus": label, "passages": len(backend), "build_s": round(build_s, 1)}
        row.update(p50_ms=round(percentile(times, 0.5), 2), p99_ms=round(percentile(times, 0.99), 2))
        rows.append(row)
    return rows


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def cache_table(corpus: Path, queries: list[str]) -> list[dict]:
    backend = BM25Backend(corpus)
    backend.load_sync()
    port = free_port()
    redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(port), "--save", ""],
                             stdout=subprocess.DEVNULL)  # fmt: skip
    time.sleep(0.5)
    rows = []
    try:
        for label, store in (
            ("in-process LRU", LRUStore()),
            ("redis (loopback)", RedisStore(f"redis://127.0.0.1:{port}")),
        ):
            cache = CachedSearch(backend, store, batch_window_ms=0)
            for phase in ("miss", "hit"):
                times = []
                for q in queries:
                    t = time.perf_counter()
                    await cache.retrieve([q], 5)
                    times.append((time.perf_counter() - t) * 1000)
                rows.append({"cache": label, "lookup": phase, "p50_ms": round(percentile(times, 0.5), 3),
                             "p99_ms": round(percentile(times, 0.99), 3)})  # fmt: skip
            await store.aclose()
    finally:
        redis.kill()
    return rows


def markdown(rows: list[dict]) -> str:
    return markdown_table(rows, cell=str)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=default_source(), help="sample, a data folder, or hf")
    parser.add_argument("--large", type=int, default=1_000_000, help="passages of the large synthetic corpus")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "search.json")
    args = parser.parse_args()
    settings = Settings()
    wiki = settings.corpus_path
    questions = [q.question for q in benchmarks.load_source("nq_open", args.data, "dev", limit=args.queries)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results["recall"] = recall_table(args.data, work)
        print("\n## Recall of supporting paragraphs (dev rows' paragraphs as the corpus)\n")
        print(markdown(results["recall"]))
        small = work / "wiki.jsonl"
        shutil.copy(wiki, small)
        results["latency"] = latency_table(small, "wiki summaries", questions, default_backends(small))
        large = work / "large.jsonl"
        sliding_corpus(wiki, large, args.large)
        results["latency"] += latency_table(large, f"{args.large:,} synthetic windows", questions, [BM25Backend(large)])
        print("\n## Index build and single-query latency (top 5, NQ-open questions)\n")
        print(markdown(results["latency"]))
        results["cache"] = asyncio.run(cache_table(small, questions))
        print("\n## Search through the cache: miss vs hit (bm25, wiki summaries)\n")
        print(markdown(results["cache"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\n-> {args.out}")


if __name__ == "__main__":
    main()
