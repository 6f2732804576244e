"""Does a client's own search reach the answer? Chat tool rounds against the service's own search (issue #43).

Made-up facts (names no model or corpus holds; seeded), each a question, a passage that states the answer, and the
answer. Per served model, every fact is asked:
- through chat completions with a search tool, `tool_choice` auto and required; when the model calls the tool the
  client answers with the fact's passage, as a client with three habits:
  `sends reasoning` (the assistant message goes back as it came, `reasoning_content` included: openai-python's
  `message.model_dump()`, SEM's SDK), `drops reasoning` (content and the call only: LangChain, the OpenAI Agents SDK;
  the service replays the turn it kept by the call's id), `turn lost` (as `drops reasoning`, under a call id the
  service never issued: what every client got before the turn was kept, and still gets when it has expired);
- through `/v1/answer` with the model's own gate, the service searching a corpus of exactly these passages (top 1:
  one passage in the result block, as the tool's text is; `passage_found` says whether it was the fact's).
An answer counts as read when it holds the fact's answer (which only the passage states). Bootstrap intervals;
each chat path paired against /v1/answer on the same facts.

    .venv/bin/python bench/tool_rounds.py [--facts 36] [--concurrency 4] [--out bench/results/tool_rounds.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from tqdm import tqdm

from bench.serving import markdown, start_service
from sem.assets import BASE_MODEL_ID
from trainer.evals.measures import fmt, paired_difference, rate
from trainer.world.names import NameMaker

ROOT = Path(__file__).resolve().parents[1]
ADAPTERS = ROOT / "sem" / "adapters"
DEFAULT, WORLD = "SmolLM2-135M-Instruct-SEM", "sem-world-135m"
TOOL = {"type": "function", "function": {"name": "search", "description": "Search the web.", "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}  # fmt: skip
STYLES = ("sends reasoning", "drops reasoning", "turn lost")
MAX_TOKENS = 64


@dataclass(frozen=True)
class Fact:
    question: str
    passage: str
    answer: str


TEMPLATES = (  # question, passage, the field that answers
    ("Who founded {company}?", "{company} was founded in {year} by {person} in the town of {town}.", "person"),
    ("What is the capital of {country}?", "{country}'s capital is {town}, a port city on the northern coast.", "town"),
    ("Who is the mayor of {town} in {term}?", "{town} elected {person} as mayor in {elected}; the term runs to {ends}.",
     "person"),
    ("In which year was the {invention} invented?", "The {invention} was invented in {year} by {person}.", "year"),
    ("At which town does the {river} river reach the sea?",
     "The {river} river rises in the hills and reaches the sea at {town}.", "town"),
    ("In which town was {person} born?", "{person} was a painter born in {town} in {year}.", "town"),
)  # fmt: skip


def make_facts(n: int, seed: int = 43) -> list[Fact]:
    """`n` made-up facts over the templates in turn, deterministic for a seed."""
    rng = random.Random(seed)
    names = NameMaker(rng, taken=set())
    facts = []
    for i in range(n):
        term = rng.randint(2026, 2034)
        fields = {kind: names.name(kind) for kind in ("person", "town", "company", "country", "invention", "river")}
        fields |= {"year": str(rng.randint(1820, 1990)), "term": term, "elected": term - 1, "ends": term + 3}
        question, passage, answer = TEMPLATES[i % len(TEMPLATES)]
        facts.append(Fact(question.format(**fields), passage.format(**fields), str(fields[answer])))
    return facts


def holds(answer: str | None, fact: Fact) -> bool:
    norm = lambda s: " ".join(re.findall(r"\w+", s.lower()))  # noqa: E731
    return bool(answer) and norm(fact.answer) in norm(answer)  # type: ignore[arg-type]


async def chat_round(client: httpx.AsyncClient, model: str, fact: Fact, choice: str, style: str) -> dict:
    """One question through chat with a search tool; a call is answered with the fact's passage."""
    messages: list[dict] = [{"role": "user", "content": fact.question}]
    body = {"model": model, "tools": [TOOL], "tool_choice": choice, "max_tokens": MAX_TOKENS}
    first = (await client.post("/v1/chat/completions", json={**body, "messages": messages})).raise_for_status().json()
    message = first["choices"][0]["message"]
    if not message.get("tool_calls"):
        return {"called": False, "read": holds(message.get("content"), fact), "content": message.get("content")}
    call = message["tool_calls"][0]
    if style != "sends reasoning":
        message = {"role": "assistant", "content": message.get("content"), "tool_calls": [call]}
    if style == "turn lost":
        call = {**call, "id": f"call_{uuid.uuid4().hex[:24]}"}
        message = {**message, "tool_calls": [call]}
    messages += [message, {"role": "tool", "tool_call_id": call["id"], "content": fact.passage}]
    final = (await client.post("/v1/chat/completions", json={**body, "messages": messages})).raise_for_status().json()
    content = final["choices"][0]["message"].get("content")
    return {"called": True, "read": holds(content, fact), "content": content,
            "reasoning": final["choices"][0]["message"].get("reasoning_content")}  # fmt: skip


async def own_search(client: httpx.AsyncClient, model: str, fact: Fact) -> dict:
    """The same question through /v1/answer: the service searches the corpus of these passages itself."""
    # top_k 1: the result block holds one passage, as the tool's does (three would add two other facts to read past)
    body = {"question": fact.question, "model": model, "max_tokens": MAX_TOKENS, "top_k": 1, "return_trace": True}
    reply = (await client.post("/v1/answer", json=body)).raise_for_status().json()
    found = any(p["text"] == fact.passage for s in reply.get("searches") or [] for p in s.get("passages") or [])
    return {"called": reply["search_count"] > 0, "read": holds(reply["answer"], fact), "content": reply["answer"],
            "passage_found": found, "reasoning": (reply.get("trace") or {}).get("text")}  # fmt: skip


async def measure(base: str, models: list[str], facts: list[Fact], concurrency: int) -> list[dict]:
    gate = asyncio.Semaphore(concurrency)
    jobs = [(m, path) for m in models for path in [("answer", None), *(("auto", s) for s in STYLES),
                                                   ("required", "sends reasoning")]]  # fmt: skip
    rows = []
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:
        bar = tqdm(total=len(jobs) * len(facts), desc="tool rounds")

        async def one(model: str, path: tuple[str, str | None], fact: Fact) -> dict:
            async with gate:
                kind, style = path
                out = await (own_search(client, model, fact) if kind == "answer"
                             else chat_round(client, model, fact, kind, style))  # type: ignore[arg-type]  # fmt: skip
                bar.update()
                return {"model": model, "path": kind, "style": style, "question": fact.question, **out}

        for model, path in jobs:
            rows += await asyncio.gather(*(one(model, path, f) for f in facts))
        bar.close()
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    table = []
    for key in dict.fromkeys((r["model"], r["path"], r["style"]) for r in rows):
        group = [r for r in rows if (r["model"], r["path"], r["style"]) == key]
        own = {r["question"]: float(r["read"]) for r in rows if r["model"] == key[0] and r["path"] == "answer"}
        read = rate([r["read"] for r in group])
        paired = paired_difference({r["question"]: float(r["read"]) for r in group}, own)
        table.append({"model": key[0], "path": "/v1/answer (own search)" if key[1] == "answer" else f"chat, {key[1]}",
                      "client": key[2] or "-", "searched": f"{sum(r['called'] for r in group)}/{len(group)}",
                      "answered from the passage": f"{fmt(read['value'])} {fmt(read['ci'])}",
                      "vs /v1/answer (paired)": "-" if key[1] == "answer"
                      else f"{fmt(paired['difference'])} {fmt(paired['ci'])}"})  # fmt: skip
    return table


def serve_with_corpus(facts: list[Fact], folder: Path) -> tuple[dict[str, str], Path]:
    """The env of a service whose default model and world model both search exactly these passages."""
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"fact-{i}", "title": "", "text": f.passage}) + "\n"
                              for i, f in enumerate(facts)))  # fmt: skip
    world = folder / WORLD
    world.mkdir()
    for item in (ADAPTERS / WORLD).iterdir():
        if not item.name.startswith(("corpus.jsonl", "examples.json")):  # its corpus, its stored index
            (world / item.name).symlink_to(item)
    (world / "corpus.jsonl").symlink_to(corpus)
    env = {"SEM_MODEL": "base", "SEM_DEFAULT_MODEL": DEFAULT, "SEM_CORPUS": str(corpus),
           "SEM_ADAPTERS": f"{DEFAULT}={ADAPTERS / 'sem-smollm2-135m'},{WORLD}={world}"}  # fmt: skip
    return env, corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=36)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--models", default=f"{DEFAULT},{WORLD}")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tool_rounds.json")
    args = parser.parse_args()
    facts = make_facts(args.facts)
    with tempfile.TemporaryDirectory() as tmp:
        env, _ = serve_with_corpus(facts, Path(tmp))
        proc, base = start_service(env)
        try:
            rows = asyncio.run(measure(base, args.models.split(","), facts, args.concurrency))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    table = summarise(rows)
    print(f"\n{len(facts)} made-up facts, base {BASE_MODEL_ID}, greedy, <= {MAX_TOKENS} tokens\n")
    print(markdown(table))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"facts": [f.__dict__ for f in facts], "table": table, "rows": rows}, indent=1))
    print(f"\n-> {args.out}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
