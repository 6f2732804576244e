"""The transformers engine with and without batching of waiting requests (sem/engines/hf.py), the embedded model:
N questions sent at once, greedy, each to its own token limit; one engine with `max_batch` 1 (one request a
`generate`, as before batching) and one with the default. Prints a Markdown table (answers/s, generated tokens/s,
wall time) and writes JSON.

    .venv/bin/python bench/hf_batching.py [--clients 1,4,16] [--max-tokens 48]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from sem import protocol
from sem.engines.base import SamplingOptions
from sem.engines.hf import MAX_BATCH, HFEngine
from sem.evaldata.benchmarks import default_source, load_source
from sem.settings import Settings
from trainer.evals.tables import markdown_table

ROOT = Path(__file__).resolve().parents[1]


async def run(engine: HFEngine, prompts: list[list[int]], max_tokens: int) -> tuple[float, int]:
    options = SamplingOptions(max_tokens=max_tokens, stop=[protocol.ANSWER_CLOSE, protocol.SEARCH_CLOSE])

    async def one(i: int) -> int:
        async for delta in engine.generate(prompts[i], options, request_id=f"q{i}"):
            return len(delta.token_ids)
        return 0

    started = time.perf_counter()
    tokens = await asyncio.gather(*(one(i) for i in range(len(prompts))))
    return time.perf_counter() - started, sum(tokens)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/hf_batching.json")
    opts = parser.parse_args()
    settings = Settings()
    engine = HFEngine.load(settings.model_path)
    questions = [e.question for e in load_source("nq_open", default_source(), "dev", limit=64)]
    tok = engine.tokenizer
    prompts = [tok.encode(protocol.render_prompt(tok, protocol.build_messages(q, ())), add_special_tokens=False)
               for q in questions]  # fmt: skip
    asyncio.run(run(engine, prompts[:2], 8))  # warm-up
    rows = []
    for clients in (int(c) for c in opts.clients.split(",")):
        for max_batch in (1, MAX_BATCH):
            engine.max_batch = max_batch
            seconds, tokens = asyncio.run(run(engine, prompts[:clients], opts.max_tokens))
            rows.append({"clients": clients, "max_batch": max_batch, "seconds": round(seconds, 2),
                         "answers_per_s": round(clients / seconds, 2),
                         "tokens_per_s": round(tokens / seconds, 1)})  # fmt: skip
    table = markdown_table(rows, cell=str)
    print(table)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps({"rows": rows, "max_tokens": opts.max_tokens}, indent=1) + "\n")
    opts.out.with_suffix(".md").write_text(table + "\n")
    print(f"-> {opts.out}, {opts.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
