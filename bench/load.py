"""Sustained load on a running service: N concurrent clients for D seconds on /v1/answer (policies mixed), then
how many failed, latency percentiles and the service's resident memory before and after.

    .venv/bin/python bench/load.py --url http://127.0.0.1:8000 --duration 60 --concurrency 32 --pid <service pid>

The CI test runs the same script for 15 s at 8 clients; the 60 s x 32 run is the documented long variant.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import time
from collections import Counter
from pathlib import Path

import httpx

QUESTIONS = [
    "Who wrote Hamlet?", "What is the capital of France?", "Who painted the Mona Lisa?", "What is photosynthesis?",
    "When did the Berlin Wall fall?", "What is the largest planet?", "Who discovered penicillin?",
    "What language is spoken in Brazil?",
]  # fmt: skip
POLICIES = ["auto", "never", "always"]


def rss_mb(pid: int | None) -> float | None:
    """Resident memory of a process and its children (vLLM runs its engine in child processes)."""
    if pid is None:
        return None
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024
            todo += [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except (OSError, StopIteration):
            continue
    return round(total, 1)


async def run_load(
    url: str, duration_s: float, concurrency: int, max_tokens: int = 32, headers: dict[str, str] | None = None
) -> dict:
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    searches: Counter[str] = Counter()
    jobs = itertools.count()
    stop_at = time.monotonic() + duration_s

    async def client(http: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at:
            n = next(jobs)
            policy = POLICIES[n % len(POLICIES)]
            body = {"question": QUESTIONS[n % len(QUESTIONS)], "search": policy, "max_tokens": max_tokens}
            started = time.perf_counter()
            try:
                reply = await http.post("/v1/answer", json=body)
                statuses[str(reply.status_code)] += 1
                if reply.status_code == 200:
                    latencies.append(time.perf_counter() - started)
                    searches[policy] += reply.json()["search_count"]
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits, headers=headers) as http:
        started = time.monotonic()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    ok = statuses.get("200", 0)
    total = sum(statuses.values())
    return {
        "duration_s": round(elapsed, 1), "concurrency": concurrency, "requests": total, "ok": ok,
        "failed": total - ok, "statuses": dict(statuses), "answers_per_s": round(ok / elapsed, 2),
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p99_s": round(sorted(latencies)[int(0.99 * (len(latencies) - 1))], 3) if latencies else None,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--duration", type=float, default=60)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--pid", type=int, help="the service's process id, to report its memory")
    parser.add_argument("--api-key", help="sent as Authorization: Bearer")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else None
    before = rss_mb(args.pid)
    result = asyncio.run(run_load(args.url, args.duration, args.concurrency, args.max_tokens, headers))
    result.update(rss_before_mb=before, rss_after_mb=rss_mb(args.pid))
    print("| " + " | ".join(result) + " |\n|" + "---|" * len(result))
    print("| " + " | ".join(str(v) for v in result.values()) + " |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
