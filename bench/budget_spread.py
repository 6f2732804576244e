"""A search budget spread by the search-rate dial against the same budget's cliff, through the running service
(issue #44's third target).

One service serves the world's model and corpus with a deployment budget of `--budget` searches a UTC minute (the
cache off: every search spends). Questions arrive at a steady pace, `--per-window` a minute, one client, and each
arm answers the same world test questions in the same order, a window at a time:

- **cliff**: the `confidence` gate at the model's calibrated threshold under the budget: it searches whatever it is
  unsure of until the window's searches are spent, then every answer is closed-book (what a budget alone does);
- **dial**: the same gate with `search_rate` 1.0 ("search as much as the budget allows"): the service holds the rate
  to what is left of the window over the questions still to come (sem.rate.spread_rate), so the searches go to the
  least sure share of the whole window. Its first two windows (dev questions) only warm the dial (arrivals, and the
  30 recent confidences it needs before its threshold is a quantile) and are not judged.

Per arm: accuracy, searches per question, answers refused a search for the spent budget; the paired difference in
accuracy (dial - cliff, bootstrap 95%) on the same questions. Writes bench/results/budget_spread.{json,md}.

    .venv/bin/python bench/budget_spread.py [--model runs/world/sft/final] [--windows 4] [--per-window 24]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from pathlib import Path

import httpx
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from serving import start_service, world_test_questions  # noqa: E402 - the bench folder's own helper

from trainer.evals.labels import Label, is_right, read_labels  # noqa: E402
from trainer.evals.measures import fmt, paired_difference  # noqa: E402
from trainer.evals.tables import markdown_table  # noqa: E402
from trainer.runtime import labels_corpus, servable  # noqa: E402

MAX_TOKENS = 64  # as `trainer eval-gate` answers the world


def next_minute(now: float) -> float:
    return math.floor(now / 60) * 60 + 60


async def answer_window(client: httpx.AsyncClient, questions: list[Label], dial: bool, desc: str) -> list[dict]:
    """The questions of one budget window, from its start, one at a time at a steady pace (late ones go at once)."""
    start = next_minute(time.time())
    gap = 60 / len(questions)
    await asyncio.sleep(start - time.time() + 0.2)
    rows = []
    for i, lab in enumerate(tqdm(questions, desc=desc, leave=False)):
        await asyncio.sleep(max(0.0, start + 0.2 + i * gap - time.time()))
        body = {"question": lab.example.prompt_text(), "max_searches": 1, "max_tokens": MAX_TOKENS}
        body |= {"search_rate": 1.0} if dial else {"search": "confidence"}
        data = (await client.post("/v1/answer", json=body)).raise_for_status().json()
        rows.append({"id": lab.example.id, "searched": data["search_count"] > 0, "answer": data["answer"],
                     "right": is_right(data["answer"], lab.example), "late_s": round(time.time() - start - 60, 1),
                     "budget_spent": bool(data.get("search_budget_exhausted"))})  # fmt: skip
    return rows


async def run_arm(base: str, windows: list[list[Label]], dial: bool) -> list[list[dict]]:
    async with httpx.AsyncClient(base_url=base, timeout=900) as client:
        name = "dial" if dial else "cliff"
        return [await answer_window(client, qs, dial, f"{name}, window {i + 1}/{len(windows)}")
                for i, qs in enumerate(windows)]  # fmt: skip


def summary(arm: str, rows: list[dict], budget: int, windows: int) -> dict:
    n = len(rows)
    return {"arm": arm, "questions": n, "budget a window": budget,
            "accuracy": round(sum(r["right"] for r in rows) / n, 3),
            "searches / q": round(sum(r["searched"] for r in rows) / n, 3),
            "searches a window": round(sum(r["searched"] for r in rows) / windows, 1),
            "refused (spent)": sum(r["budget_spent"] for r in rows),
            "over the window's end": sum(r["late_s"] > 0 for r in rows)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="runs/world/sft/final", help="model or adapter (merged for the service)")
    parser.add_argument("--labels", type=Path, default=ROOT / "runs/world/labels/labels.jsonl")
    parser.add_argument("--windows", type=int, default=4, help="judged one-minute windows per arm")
    parser.add_argument("--per-window", type=int, default=24, help="questions a minute")
    parser.add_argument("--budget", type=int, default=7, help="searches a minute (the deployment's budget)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/budget_spread.json")
    opts = parser.parse_args()
    labels = world_test_questions(opts.labels)
    k = opts.per_window
    windows = [labels[i * k : (i + 1) * k] for i in range(opts.windows)]
    dev = read_labels(opts.labels, "dev")
    warm = [dev[:k], dev[k : 2 * k]]
    with servable(opts.model) as model_path:
        env = {"SEM_MODEL": str(model_path), "SEM_CORPUS": str(labels_corpus(opts.labels)), "SEM_CACHE_LRU_SIZE": "0",
               "SEM_REDIS_URL": "", "SEM_BUDGET__DEPLOYMENT__MINUTE": str(opts.budget)}  # fmt: skip
        proc, base = start_service(env)
        try:
            cliff = asyncio.run(run_arm(base, windows, dial=False))
            dial = asyncio.run(run_arm(base, [*warm, *windows], dial=True))[len(warm) :]
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    flat = {"cliff": [r for w in cliff for r in w], "dial": [r for w in dial for r in w]}
    rows = [summary(arm, flat[arm], opts.budget, opts.windows) for arm in ("cliff", "dial")]
    right = {arm: {r["id"]: float(r["right"]) for r in flat[arm]} for arm in flat}
    diff = paired_difference(right["dial"], right["cliff"])
    table = markdown_table(rows, cell=str)
    table += f"\n\nDial - cliff, accuracy on the same {diff['n']} questions (paired bootstrap 95%): "
    table += f"{diff['difference']:+.3f} {fmt(diff['ci'])}\n"
    print(table)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps({"model": opts.model, "budget": opts.budget, "per_window": k, "rows": rows,
                                    "dial_minus_cliff": diff, "answers": flat}, indent=1) + "\n")  # fmt: skip
    opts.out.with_suffix(".md").write_text(table)
    print(f"-> {opts.out}, {opts.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
