"""Chaos: minutes of mixed load on a real service (vLLM engine) while its engine core is killed (kill -9) at
intervals. Every request must end (an answer, or a clear error), none may hang, and the service must be answering
at the end.

    .venv/bin/python bench/chaos.py --duration 180 --clients 16 --kill-every 60
    .venv/bin/python bench/chaos.py --duration 120 --clients 32 --kill-every 0 --seeded-only   # seeded load alone

The mix: every policy (auto, never, always, confidence) on /v1/answer and chat completions, seeded sampling, SSE
streams, clients that disconnect mid-stream, OpenAI tool calls (the client runs the search), and malformed input.
What it prints: outcomes by kind, latency, time from each kill to answering again, requests left hanging, the
service's memory, and its engine deaths and restarts (from /metrics).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import QUESTIONS, rss_mb

POLICIES = ["auto", "never", "always", "confidence"]
QUERY = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
SEARCH_TOOL = {"type": "function", "function": {"name": "web_search", "description": "Search.", "parameters": QUERY}}
MALFORMED = [
    ("/v1/answer", b"{not json"),
    ("/v1/answer", json.dumps({"question": "Who wrote Hamlet?", "search": "sometimes"}).encode()),
    ("/v1/answer", json.dumps({"question": "", "max_tokens": -3}).encode()),
    ("/v1/chat/completions", json.dumps({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}).encode()),
    ("/v1/chat/completions", json.dumps({"messages": [{"role": "assistant", "content": "hi"}]}).encode()),
    ("/v1/chat/completions", json.dumps({"model": "{model}", "messages": [{"role": "user"}], "seed": -1}).encode()),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def engine_core(pid: int) -> int | None:
    """The pid of vLLM's EngineCore process under the service."""
    for line in subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout.splitlines()[1:]:
        child, parent, *args = line.split(None, 2)
        if int(parent) == pid and args and "EngineCore" in args[0]:
            return int(child)
    return None


class Chaos:
    def __init__(self, url: str, model: str, seed: int, seeded_only: bool, timeout_s: float) -> None:
        self.url, self.model, self.seeded_only, self.timeout_s = url, model, seeded_only, timeout_s
        self.rng = random.Random(seed)
        self.outcomes: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.in_flight = 0
        self.hung = 0
        self.retry_after: float = 0.0  # a 503's Retry-After: a client waits it out, as openai-python does

    def request(self) -> tuple[str, dict]:
        """One request of the mix: (kind, what to send)."""
        rng = self.rng
        question = rng.choice(QUESTIONS)
        seed = rng.randrange(1000)
        if self.seeded_only:
            return "answer-seeded", {"question": question, "search": rng.choice(POLICIES), "temperature": 0.9,
                                     "seed": seed, "max_tokens": 24}  # fmt: skip
        roll = rng.random()
        policy = rng.choice(POLICIES)
        if roll < 0.30:
            return "answer", {"question": question, "search": policy, "max_tokens": 32,
                              **({"temperature": 0.9, "seed": seed} if rng.random() < 0.5 else {})}  # fmt: skip
        sampled = {"temperature": 0.9, "seed": seed} if rng.random() < 0.5 else {}
        chat = {"model": self.model, "messages": [{"role": "user", "content": question}], "max_tokens": 32,
                "sem": {"search": policy}, **sampled}  # fmt: skip
        if roll < 0.50:
            return "chat", chat
        if roll < 0.70:
            return "stream", {**chat, "stream": True}
        if roll < 0.80:
            return "disconnect", {**chat, "stream": True, "max_tokens": 96}
        if roll < 0.92:
            return "tool-call", {**chat, "tools": [SEARCH_TOOL], "tool_choice": "auto"}
        return "malformed", {}

    async def one(self, http: httpx.AsyncClient) -> None:
        kind, body = self.request()
        self.kinds[kind] += 1
        started = time.perf_counter()
        self.in_flight += 1
        try:
            outcome = await asyncio.wait_for(self._send(http, kind, body), self.timeout_s)
        except TimeoutError:
            outcome, self.hung = "hung", self.hung + 1
        except httpx.HTTPError as exc:
            outcome = f"transport:{type(exc).__name__}"
        finally:
            self.in_flight -= 1
        self.outcomes[outcome] += 1
        if outcome == "answered":
            self.latencies.append(time.perf_counter() - started)
        if self.retry_after:
            wait, self.retry_after = self.retry_after, 0.0
            await asyncio.sleep(min(wait, 5.0))

    async def _send(self, http: httpx.AsyncClient, kind: str, body: dict) -> str:
        if kind == "malformed":
            path, raw = self.rng.choice(MALFORMED)
            reply = await http.post(path, content=raw.replace(b"{model}", self.model.encode()),
                                    headers={"content-type": "application/json"})  # fmt: skip
            return "rejected-4xx" if 400 <= reply.status_code < 500 else f"malformed-got-{reply.status_code}"
        if kind in ("stream", "disconnect"):
            async with http.stream("POST", "/v1/chat/completions", json=body) as reply:
                if reply.status_code != 200:
                    await reply.aread()
                    return self._status(reply)
                frames = 0
                async for line in reply.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    frames += 1
                    if kind == "disconnect" and frames == 3:
                        return "disconnected"  # leaving the block closes the connection mid-stream
                    if line.startswith('data: {"error"'):
                        code = json.loads(line[6:])["error"].get("code")
                        return f"stream-error:{code}"
                    if line == "data: [DONE]":
                        return "answered"
                return "stream-cut"  # ended without [DONE]
        path = "/v1/answer" if kind.startswith("answer") else "/v1/chat/completions"
        return self._status(await http.post(path, json=body))

    def _status(self, reply: httpx.Response) -> str:
        if reply.status_code == 200:
            return "answered"
        if reply.status_code == 503:
            self.retry_after = float(reply.headers.get("retry-after", 1))
        try:
            code = reply.json()["error"].get("code")
        except (ValueError, KeyError, TypeError):
            code = None
        return f"{reply.status_code}:{code}"


async def ready_after(url: str, since: float, limit_s: float = 300) -> float | None:
    """Seconds from `since` until /readyz says 200 (None past the limit)."""
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        while time.monotonic() - since < limit_s:
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return time.monotonic() - since
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    return None


async def answering_after(url: str, since: float, limit_s: float = 300) -> float | None:
    """Seconds from `since` until a real answer comes back (None past the limit): /readyz may still say 200 for
    a moment after a kill, before the death is noticed."""
    body = {"question": "Who wrote Hamlet?", "search": "never", "max_tokens": 8}
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        while time.monotonic() - since < limit_s:
            try:
                if (await http.post("/v1/answer", json=body)).status_code == 200:
                    return time.monotonic() - since
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.5)
    return None


async def run(args: argparse.Namespace, url: str, pid: int) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        model = (await http.get("/v1/models")).json()["data"][0]["id"]
    chaos = Chaos(url, model, args.seed, args.seeded_only, args.request_timeout)
    stop_at = time.monotonic() + args.duration
    recoveries: list[float | None] = []
    kills: list[float] = []
    memory = [rss_mb(pid) or 0.0]

    async def client(http: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at and sum(chaos.outcomes.values()) + chaos.in_flight < args.requests:
            await chaos.one(http)

    async def killer() -> None:
        if args.kill_every <= 0:
            return
        while (wait := min(args.kill_every, stop_at - time.monotonic())) > 10:
            await asyncio.sleep(wait)
            core = engine_core(pid)
            if core is None:
                continue
            os.kill(core, signal.SIGKILL)
            kills.append(killed := time.monotonic())
            print(f"[{time.strftime('%X')}] killed EngineCore {core}; {chaos.in_flight} requests in flight")
            await asyncio.sleep(1.0)  # let the death be noticed: an answer in this second came from the old engine
            recoveries.append(await answering_after(url, killed))
            print(f"[{time.strftime('%X')}] answering again after {recoveries[-1]} s")

    async def sampler() -> None:
        while time.monotonic() < stop_at:
            await asyncio.sleep(5)
            memory.append(rss_mb(pid) or 0.0)
            print(f"[{time.strftime('%X')}] {sum(chaos.outcomes.values())} done, {dict(chaos.outcomes)}")

    limits = httpx.Limits(max_connections=args.clients + 8)
    async with httpx.AsyncClient(base_url=url, timeout=args.request_timeout, limits=limits) as http:
        started = time.monotonic()
        background = [asyncio.create_task(killer()), asyncio.create_task(sampler())]
        await asyncio.gather(*(client(http) for _ in range(args.clients)))
        elapsed = time.monotonic() - started
        for task in background:  # the clients are done; the final check below waits for a recovery under way
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        final = await answering_after(url, time.monotonic(), 180)
        answer = await http.post("/v1/answer", json={"question": "Who wrote Hamlet?", "search": "never"})
        metrics = (await http.get("/metrics")).text
    events = {line.split('"')[1]: float(line.split()[-1]) for line in metrics.splitlines()
              if line.startswith("sem_engine_events_total{")}  # fmt: skip
    lat = sorted(chaos.latencies)
    return {
        "duration_s": round(elapsed), "clients": args.clients, "requests": sum(chaos.outcomes.values()),
        "by_kind": dict(chaos.kinds), "outcomes": dict(chaos.outcomes.most_common()), "hung": chaos.hung,
        "internal_errors_500": sum(n for k, n in chaos.outcomes.items() if k.startswith("500")),
        "kills": len(kills), "recovery_s": [None if r is None else round(r, 1) for r in recoveries],
        "engine_events": events, "p50_s": round(statistics.median(lat), 2) if lat else None,
        "p99_s": round(lat[int(0.99 * (len(lat) - 1))], 2) if lat else None,
        "rss_mb": {"start": memory[0], "max": max(memory), "end": rss_mb(pid)},
        "answering_at_end": final is not None and answer.status_code == 200,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=180, help="seconds of load")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--kill-every", type=float, default=60, help="seconds between kills of EngineCore; 0 = none")
    parser.add_argument("--requests", type=int, default=10**9, help="stop after this many requests")
    parser.add_argument("--seeded-only", action="store_true", help="only seeded /v1/answer requests (the #30 target)")
    parser.add_argument("--request-timeout", type=float, default=150, help="a request slower than this has hung")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = Path("bench/results/chaos-service.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SEM_PORT": str(port), "SEM_LOG_LEVEL": "warning"}
    service = subprocess.Popen([sys.executable, "-m", "service"], env=env, stdout=log.open("w"),
                               stderr=subprocess.STDOUT)  # fmt: skip
    try:
        if asyncio.run(ready_after(url, time.monotonic(), 300)) is None:
            raise SystemExit(f"the service did not get ready; see {log}")
        result = asyncio.run(run(args, url, service.pid))
    finally:
        service.terminate()
        service.wait(timeout=60)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
