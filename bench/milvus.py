"""Milvus Lite vs bm25s: recall of supporting paragraphs, ingestion rate, load / first-query / steady latency, and
batched queries. Prints Markdown tables; writes JSON.

    .venv/bin/python bench/milvus.py [--data ../shared/data] [--large 100000] [--hybrid]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from search import markdown, percentile, recall_table, sliding_corpus

from sem.evaldata import benchmarks
from sem.evaldata.benchmarks import default_source
from sem.search.bm25 import BM25Backend
from sem.search.milvus import MilvusBackend
from sem.settings import Settings


def lite(corpus: Path, work: Path, mode: str = "bm25") -> MilvusBackend:
    backend = MilvusBackend(corpus, str(work / f"{corpus.stem}-{mode}.db"), mode=mode)  # type: ignore[arg-type]
    backend.name = f"milvus-lite ({mode})"
    return backend


def query_timings(backend, queries: list[str]) -> dict:
    """Single-query p50/p99 (ms), then one batch of 32."""
    times = []
    for q in queries:
        t = time.perf_counter()
        backend.search_sync([q], 5)
        times.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    backend.search_sync(queries[:32], 5)
    batch_ms = (time.perf_counter() - t) * 1000
    return {"p50_ms": round(percentile(times, 0.5), 2), "p99_ms": round(percentile(times, 0.99), 2),
            "batch_of_32_ms": round(batch_ms, 1)}  # fmt: skip


def milvus_rows(corpus: Path, label: str, queries: list[str], work: Path) -> list[dict]:
    """Ingest (fresh), reopen (what a restart pays), then single and batched query latency."""
    backend = lite(corpus, work)
    started = time.perf_counter()
    backend.load_sync()  # ingestion + load + warm-up
    ingest_s = time.perf_counter() - started
    backend._client.close()
    reopened = lite(corpus, work)
    started = time.perf_counter()
    reopened.load_sync()
    reopen_s = time.perf_counter() - started
    timings = query_timings(reopened, queries)
    n = reopened._client.query(reopened.collection, filter="", output_fields=["count(*)"])[0]["count(*)"]
    reopened._client.close()
    return [{"backend": "milvus-lite (bm25)", "corpus": label, "passages": n, "ingest_s": round(ingest_s, 1),
             "passages_per_s": round(n / ingest_s), "reopen_s": round(reopen_s, 2), **timings}]  # fmt: skip


def bm25_rows(corpus: Path, label: str, queries: list[str]) -> list[dict]:
    backend = BM25Backend(corpus)
    started = time.perf_counter()
    backend.load_sync()
    build_s = time.perf_counter() - started
    return [{"backend": "bm25s", "corpus": label, "passages": len(backend), "ingest_s": round(build_s, 1),
             "passages_per_s": round(len(backend) / build_s), "reopen_s": "-",
             **query_timings(backend, queries)}]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=default_source(), help="sample, a data folder, or hf")
    parser.add_argument("--large", type=int, default=100_000, help="passages of the synthetic corpus (0: skip)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--hybrid", action="store_true", help="also recall of dense and hybrid (slow: embeddings)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "milvus.json")
    args = parser.parse_args()
    wiki = Settings().corpus_path
    questions = [q.question for q in benchmarks.load_source("nq_open", args.data, "dev", limit=args.queries)]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        modes = ["bm25", "dense", "hybrid"] if args.hybrid else ["bm25"]
        results["recall"] = recall_table(
            args.data, work, lambda corpus: [BM25Backend(corpus)] + [lite(corpus, work, m) for m in modes]
        )
        print("\n## Recall of supporting paragraphs (dev rows' paragraphs as the corpus)\n")
        print(markdown(results["recall"]))
        small = work / "wiki.jsonl"
        shutil.copy(wiki, small)
        results["latency"] = bm25_rows(small, "wiki summaries", questions)
        results["latency"] += milvus_rows(small, "wiki summaries", questions, work)
        if args.large:
            large = work / "large.jsonl"
            sliding_corpus(wiki, large, args.large)
            label = f"{args.large:,} synthetic windows"
            results["latency"] += bm25_rows(large, label, questions) + milvus_rows(large, label, questions, work)
        print("\n## Ingestion, reopening and query latency (top 5, NQ-open questions)\n")
        print(markdown(results["latency"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\n-> {args.out}")


if __name__ == "__main__":
    main()
