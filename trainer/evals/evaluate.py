"""`trainer eval`: accuracy and search behaviour of a model (or a running service) under each policy.

Policies: `auto` (the model decides), `never`, `always` (one search first: naive RAG) and `budget` (the model
decides, up to N searches). Per benchmark: EM, F1, search ratio (share of questions with a search) and searches
per question; written as Markdown + JSON, plus a PNG of F1 against searches per question.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sem.loop import LoopOptions, SearchLoop, SearchPolicy
from sem.scoring import em_score, score
from trainer.data import Example
from trainer.evals import tables
from trainer.evals.labels import is_right
from trainer.evals.runner import bounded
from trainer.evals.runs import Outcome, first_answer

POLICIES = ("auto", "never", "always", "budget")


@dataclass
class Row:
    policy: str
    source: str
    n: int
    em: float
    f1: float
    search_ratio: float
    searches_per_question: float


def policy_options(policy: str, max_searches: int, max_tokens: int) -> LoopOptions:
    if policy == "budget":
        return LoopOptions(policy=SearchPolicy.auto, max_searches=max_searches, max_tokens=max_tokens)
    return LoopOptions(policy=SearchPolicy(policy), max_searches=1, max_tokens=max_tokens)


def outcome(
    example: Example, policy: str, answer: str, first: str, searches: int, tokens: int, engine_calls: int,
    latency_s: float, confidence: float | None = None,
) -> Outcome:  # fmt: skip
    """One answer as `trainer eval` scores it: `klass` is the data's kind (known / needs_search), `f1` the benchmark's
    score (token F1; the letter for multiple choice, the number for GSM8K), `extra["em"]` its exact match."""
    golds, choices = list(example.answers), list(example.choices or []) or None
    em = em_score(answer, golds, source=example.source, choices=choices)
    return Outcome(example.id, example.source, example.kind, policy, answer, first, is_right(answer, example),
                   score(answer, golds, source=example.source, choices=choices), searches, tokens, engine_calls,
                   latency_s, confidence, {"em": em})  # fmt: skip


async def run_local(
    loop: SearchLoop, examples: list[Example], policies: list[str], *, max_searches: int, max_tokens: int,
    concurrency: int = 16,
) -> list[Outcome]:  # fmt: skip
    """Every example under every policy through the loop (concurrent: vLLM batches them)."""

    def job(example: Example, policy: str) -> Callable[[], Awaitable[Outcome]]:
        async def one() -> Outcome:
            started = time.perf_counter()
            trace = await loop.run(example.prompt_text(), policy_options(policy, max_searches, max_tokens))
            return outcome(example, policy, trace.answer, first_answer(trace), trace.search_count,
                           trace.generated_tokens, trace.engine_calls, time.perf_counter() - started,
                           trace.confidence)  # fmt: skip

        return one

    return await bounded([job(ex, p) for p in policies for ex in examples], concurrency, "eval")


async def run_remote(
    url: str, examples: list[Example], policies: list[str], *, max_searches: int, max_tokens: int,
    concurrency: int = 8,
) -> list[Outcome]:  # fmt: skip
    """The same against a running service's `/v1/answer`."""
    import httpx

    async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=300) as client:

        def job(example: Example, policy: str) -> Callable[[], Awaitable[Outcome]]:
            async def one() -> Outcome:
                body: dict[str, Any] = {"question": example.prompt_text(), "max_tokens": max_tokens}
                body["search"] = "auto" if policy == "budget" else policy
                body["max_searches"] = max_searches if policy == "budget" else 1
                body["return_trace"] = True  # its answers (the first one) and engine calls
                r = await client.post("/v1/answer", json=body)
                r.raise_for_status()
                data = r.json()
                answers, answer = data["trace"]["answers"], data["answer"]
                return outcome(example, policy, answer, answers[0] if answers else answer, data["search_count"],
                               data["usage"]["completion_tokens"], data["trace"]["engine_calls"],
                               data["latency_ms"] / 1000, data.get("confidence"))  # fmt: skip

            return one

        return await bounded([job(ex, p) for p in policies for ex in examples], concurrency, f"eval {url}")


def summarize(outcomes: list[Outcome]) -> list[Row]:
    groups: dict[tuple[str, str], list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[(o.policy, o.source)].append(o)
        groups[(o.policy, "all")].append(o)
    rows = []
    for (policy, source), items in groups.items():
        n = len(items)
        rows.append(
            Row(
                policy=policy,
                source=source,
                n=n,
                em=round(sum(o.extra["em"] for o in items) / n, 4),
                f1=round(sum(o.f1 for o in items) / n, 4),
                search_ratio=round(sum(o.searches > 0 for o in items) / n, 4),
                searches_per_question=round(sum(o.searches for o in items) / n, 4),
            )
        )
    order = {p: i for i, p in enumerate(POLICIES)}
    return sorted(rows, key=lambda r: (r.source == "all", r.source, order.get(r.policy, 99)))


def markdown_table(rows: list[Row], title: str) -> str:
    table = [{"benchmark": r.source, "policy": r.policy, "n": r.n, "EM": f"{r.em:.3f}", "F1": f"{r.f1:.3f}",
              "search ratio": f"{r.search_ratio:.2f}", "searches / question": f"{r.searches_per_question:.2f}"}
             for r in rows]  # fmt: skip
    return tables.markdown_table(table, title=title, cell=str) + "\n"


def plot(rows: list[Row], path: Path, title: str) -> None:
    """F1 against searches per question, one point per (benchmark, policy)."""
    import matplotlib.pyplot as plt

    with tables.figure(path, size=(7, 4.5), title=title) as ax:
        markers = {"auto": "o", "never": "s", "always": "^", "budget": "D"}
        sources = sorted({r.source for r in rows})
        colors = dict(zip(sources, plt.cm.tab10.colors, strict=False))
        for r in rows:
            ax.scatter(r.searches_per_question, r.f1, marker=markers.get(r.policy, "x"), color=colors[r.source], s=60)
        for source in sources:
            ax.scatter([], [], color=colors[source], label=source)
        for policy, marker in markers.items():
            ax.scatter([], [], marker=marker, color="grey", label=f"policy: {policy}")
        ax.set_xlabel("searches per question")
        ax.set_ylabel("F1 (MC / GSM8K: accuracy)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")


def write_report(outcomes: list[Outcome], output_dir: Path, title: str) -> list[Row]:
    output_dir.mkdir(parents=True, exist_ok=True)
    rows = summarize(outcomes)
    report = {"title": title, "summary": [asdict(r) for r in rows], "outcomes": [asdict(o) for o in outcomes]}
    (output_dir / "results.json").write_text(json.dumps(report, indent=2))
    (output_dir / "results.md").write_text(markdown_table(rows, title))
    plot(rows, output_dir / "results.png", title)
    return rows
