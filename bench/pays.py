"""Where SEM pays (issue #44): every gate on labelled questions (the world's test split by default; real questions
with `--labels results/gate/tuned/labels/labels.jsonl --split dev --model default`) through the running service,
while each search costs what a web search API costs (sem.search.costly: log-normal waits, spread fitted to published
p50/p95).

For each search latency (median 0, 100, 300, 1,000, 3,000 ms) one service is started with the world's model and
corpus, the cache off (every search pays, as a first-seen question does) and the simulated cost on; each gate
(`never`, `always`, `auto`, `confidence` at the model's calibrated threshold) answers the same questions at 1 client
and at 16. Per row: accuracy against the gold, searches per question, p50/p95/mean latency, what 1,000 answers cost
in searches (at `--price` per 1,000, an assumption of the order of web API list prices). Then, per gate and client
count, the break-even search latency above which it answers faster on average than `always` (a line through its
mean latencies, measured at each latency), and a plot: accuracy against cost, latency against search latency.
At 0 ms, first: the search-rate dial (`--rate`) against a budget's cliff at the same number of searches, on the
same questions in the same order.

    .venv/bin/python bench/pays.py [--model runs/world/sft/final] [--questions 120] [--solo 40]

Needs the world (`make world`), or real labels; writes bench/results/pays.{json,md,png} (`--out` to change).
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

from serving import labelled_questions, start_service  # noqa: E402 - the bench folder's own helper

from trainer.evals.labels import Label, is_right, read_labels  # noqa: E402
from trainer.evals.tables import markdown_table  # noqa: E402
from trainer.runtime import labels_corpus, servable  # noqa: E402

GATES = ("never", "always", "auto", "confidence")
LATENCIES_MS = (0, 100, 300, 1000, 3000)
MAX_TOKENS = 64  # as `trainer eval-gate` answers the world


async def answer_all(base: str, labels: list[Label], gate: str, clients: int) -> list[dict]:
    """Each question once, `clients` in flight; per question its reply, latency and whether it was right."""
    slots = asyncio.Semaphore(clients)
    rows: list[dict] = []
    async with httpx.AsyncClient(base_url=base, timeout=900) as client:

        async def one(lab: Label) -> None:
            body = {"question": lab.example.prompt_text(), "search": gate, "max_searches": 1, "max_tokens": MAX_TOKENS}
            async with slots:
                started = time.perf_counter()
                reply = await client.post("/v1/answer", json=body)
                seconds = time.perf_counter() - started
            reply.raise_for_status()
            data = reply.json()
            rows.append({"id": lab.example.id, "seconds": seconds, "searches": data["search_count"],
                         "right": is_right(data["answer"], lab.example), "answer": data["answer"]})  # fmt: skip

        await asyncio.gather(*(one(lab) for lab in labels))
    return rows


async def answer_dialled(base: str, warm: list[Label], questions: list[Label], rate: float) -> list[tuple[bool, bool]]:
    """The search-rate dial on a fresh service: its window warmed on `warm` (dev questions, not judged here), then
    the questions one at a time, in order (the window sees only what came before, as in a deployment): per question,
    whether it searched and whether it was right."""
    await answer_all(base, warm, "confidence", 4)
    out = []
    async with httpx.AsyncClient(base_url=base, timeout=900) as client:
        for lab in questions:
            body = {"question": lab.example.prompt_text(), "search_rate": rate, "max_searches": 1,
                    "max_tokens": MAX_TOKENS}  # fmt: skip
            data = (await client.post("/v1/answer", json=body)).raise_for_status().json()
            out.append((data["search_count"] > 0, is_right(data["answer"], lab.example)))
    return out


def dial_against_cliff(dialled: list[tuple[bool, bool]], questions: list[Label], rate: float,
                       answered: dict[str, list[dict]]) -> list[dict]:  # fmt: skip
    """The dial against a budget's cliff at the same number of searches, same questions, same order: the cliff
    searches the first questions until those searches are spent (`always`'s answers), then none (`never`'s)."""
    searches = sum(s for s, _ in dialled)
    right = {gate: {r["id"]: r["right"] for r in answered[gate]} for gate in ("always", "never")}
    cliff = [right["always" if i < searches else "never"][lab.example.id] for i, lab in enumerate(questions)]
    n = len(questions)
    return [{"gate": f"dial at rate {rate}", "questions": n, "searches": round(searches / n, 3),
             "accuracy": round(sum(r for _, r in dialled) / n, 3)},
            {"gate": f"cliff: the first {searches} searched", "questions": n, "searches": round(searches / n, 3),
             "accuracy": round(sum(cliff) / n, 3)}]  # fmt: skip


def summarise(rows: list[dict], gate: str, clients: int, latency_ms: int, price: float) -> dict:
    seconds = sorted(r["seconds"] for r in rows)
    searches = sum(r["searches"] for r in rows) / len(rows)
    return {"search_ms": latency_ms, "clients": clients, "gate": gate, "questions": len(rows),
            "accuracy": round(sum(r["right"] for r in rows) / len(rows), 3), "searches": round(searches, 3),
            "p50_s": round(statistics.median(seconds), 2), "p95_s": round(seconds[int(0.95 * (len(seconds) - 1))], 2),
            "mean_s": round(statistics.fmean(seconds), 2),
            "cost_per_1000": round(1000 * searches * price / 1000, 2)}  # fmt: skip


def break_even(rows: list[dict]) -> list[dict]:
    """Per gate and client count: the search latency above which its mean latency is below `always`'s, from a
    least-squares line through each one's mean latency against the search latency. The slope is seconds of answer
    latency per second of search latency: about the searches per answer, one client."""
    out = []
    for clients in sorted({r["clients"] for r in rows}):
        lines = {}
        for gate in GATES:
            points = [
                (r["search_ms"] / 1000, r["mean_s"]) for r in rows if r["gate"] == gate and r["clients"] == clients
            ]
            if len({x for x, _ in points}) >= 2:
                lines[gate] = statistics.linear_regression(*zip(*points, strict=True))
        if "always" not in lines:
            continue
        a_slope, a_icpt = lines["always"]
        for gate in ("never", "auto", "confidence"):
            if gate not in lines:
                continue
            slope, icpt = lines[gate]
            if slope < a_slope:  # it gains on `always` with every ms a search takes
                crossing = max(0.0, (icpt - a_icpt) / (a_slope - slope))
                verdict = f"{1000 * crossing:.0f} ms"
            else:
                verdict = "never" if icpt >= a_icpt else "faster only below it"
            out.append({"clients": clients, "gate": gate, "slope": round(slope, 3), "always_slope": round(a_slope, 3),
                        "overhead_s": round(icpt - a_icpt, 3), "faster_than_always_above": verdict})  # fmt: skip
    return out


def plot(rows: list[dict], path: Path, price: float, questions: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    solo = min(r["clients"] for r in rows)
    for gate in GATES:
        mine = [r for r in rows if r["gate"] == gate]
        at = [r for r in mine if r["clients"] == solo]
        left.scatter([r["cost_per_1000"] for r in mine], [r["accuracy"] for r in mine], label=gate)
        right.plot([r["search_ms"] for r in at], [r["mean_s"] for r in at], marker="o", label=gate)
    left.set_xlabel(f"search cost per 1,000 answers (at {price:g} per 1,000 searches)")
    left.set_ylabel(f"accuracy ({questions})")
    right.set_xlabel("median search latency (ms)")
    right.set_ylabel(f"mean answer latency (s), {solo} client")
    right.set_xscale("symlog", linthresh=100)
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Where SEM pays: each gate while searches cost what a web search API costs")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run(opts: argparse.Namespace, crowd: list[Label], solo: list[Label], warm: list[Label],
        corpus: Path) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """One service per search latency; every gate at 1 and 16 clients; the dial against the cliff at 0 ms."""
    rows: list[dict] = []
    dial: list[dict] = []
    with servable(None if opts.model == "default" else opts.model) as model_path:
        for latency in (int(x) for x in opts.latencies.split(",")):
            env = {"SEM_CORPUS": str(corpus), "SEM_CACHE_LRU_SIZE": "0", "SEM_REDIS_URL": "",
                   "SEM_SEARCH__SIMULATED_LATENCY_MS": str(latency), "SEM_SEARCH__SIMULATED_LATENCY_SEED": "0",
                   "SEM_SEARCH__PRICE_PER_1000": str(opts.price)}  # fmt: skip
            if model_path:  # else the service's own default model
                env["SEM_MODEL"] = str(model_path)
            proc, base = start_service(env)
            try:
                if latency == 0:  # first, while the dial's window holds no judged question
                    dialled = asyncio.run(answer_dialled(base, warm, crowd, opts.rate))
                for clients, questions in ((1, solo), (16, crowd)):
                    answered = {}
                    for gate in tqdm(GATES, desc=f"{latency} ms a search, {clients} client(s)"):
                        answered[gate] = asyncio.run(answer_all(base, questions, gate, clients))
                        rows.append(summarise(answered[gate], gate, clients, latency, opts.price))
                if latency == 0:
                    dial = dial_against_cliff(dialled, crowd, opts.rate, answered)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    return rows, dial


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="runs/world/sft/final",
                        help="model or adapter (merged for the service); `default`: the service's own")  # fmt: skip
    parser.add_argument("--labels", type=Path, default=ROOT / "runs/world/labels/labels.jsonl")
    parser.add_argument("--split", default="test", help="the labels' split answered (the dial warms on another)")
    parser.add_argument("--questions", type=int, default=120, help="questions at 16 clients (seeded sample)")
    parser.add_argument("--solo", type=int, default=40, help="of those, how many one client answers")
    parser.add_argument("--latencies", default=",".join(map(str, LATENCIES_MS)), help="median ms per search")
    parser.add_argument("--price", type=float, default=5.0, help="per 1,000 searches (assumed)")
    parser.add_argument("--rate", type=float, default=0.3, help="the search-rate dial against a budget's cliff")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/pays.json")
    opts = parser.parse_args()
    labels = labelled_questions(opts.labels, opts.split)
    warm = read_labels(opts.labels, "dev" if opts.split == "test" else "train")[:100]
    crowd, solo = labels[: opts.questions], labels[: opts.solo]
    corpus = labels_corpus(opts.labels, ROOT / "runs" / "bench" / f"{opts.labels.parent.name}-corpus.jsonl")
    rows, dial = run(opts, crowd, solo, warm, corpus)
    crossings = break_even(rows)
    crossings = break_even(rows)
    table = markdown_table(rows, cell=str) + "\n\nBreak-even search latency against `always`:\n\n"
    table += markdown_table(crossings, cell=str)
    if dial:
        table += "\n\nThe search-rate dial against a budget's cliff (0 ms a search, one client, same order):\n\n"
        table += markdown_table(dial, cell=str)
    print(table)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps({"rows": rows, "break_even": crossings, "dial": dial, "model": opts.model,
                                    "labels": str(opts.labels), "split": opts.split,
                                    "price_per_1000": opts.price}, indent=1) + "\n")  # fmt: skip
    opts.out.with_suffix(".md").write_text(table + "\n")
    plot(rows, opts.out.with_suffix(".png"), opts.price, f"{opts.labels.parent.name} {opts.split} questions")
    print(f"-> {opts.out}, {opts.out.with_suffix('.md')}, {opts.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
