"""Session 27's rule on test: auto (and either) with read_fresh against the adapter's confidence with read_fresh (the
claim) and its plain confidence (session 23, a second line); the adapter's fresh confidence against its plain one
(what ships); accuracy against session 26's oracle."""

import json
from pathlib import Path

from trainer.evals.gaterun import GateRun
from trainer.evals.measures import paired_difference

questions = {q["id"]: q for q in map(json.loads, Path("runs/world/world/questions.jsonl").read_text().splitlines())}


def load(run: str, policy: str) -> dict:
    return {o.id: o for o in GateRun.read(Path(run)).outcomes if o.policy == policy}


T = "results/world/fresh-test"
fresh_conf = load(f"{T}/adapter-fresh", "confidence")
plain_conf = load("results/world/focus-control-test/adapter", "confidence")
oracle = load("results/world/focus40-test/focus40", "oracle")


def right(o: dict) -> dict:
    return {i: float(x.right) for i, x in o.items()}


def line(name: str, mine: dict, base: dict, label: str) -> None:
    changed = [i for i in mine if questions[i]["changed"]]
    rest = {i: v for i, v in right(mine).items() if not questions[i]["changed"]}
    searched = sum(1 for i in changed if mine[i].searches)
    print(
        f"{name} vs {label}: accuracy {sum(right(mine).values()) / len(mine):.3f}, searches "
        f"{sum(1 for o in mine.values() if o.searches) / len(mine):.3f}, read fresh "
        f"{sum(1 for o in mine.values() if o.extra.get('read_fresh'))}; changed searched {searched}/{len(changed)}, "
        f"right {sum(mine[i].right for i in changed)}"
    )
    print(f"  rest: {paired_difference(rest, right(base))}")
    print(f"  all: {paired_difference(right(mine), right(base))}")
    searched = paired_difference(
        {i: float(o.searches > 0) for i, o in mine.items()}, {i: float(o.searches > 0) for i, o in base.items()}
    )
    print(f"  searches: {searched}")


for policy in ("auto", "either", "confidence"):
    mine = load(f"{T}/focus40-fresh", policy)
    line(f"checkpoint 40 {policy} fresh", mine, fresh_conf, "adapter confidence fresh (the claim)")
    line(f"checkpoint 40 {policy} fresh", mine, plain_conf, "adapter confidence plain (second line)")
    print(f"  minus session 26 oracle: {paired_difference(right(mine), right(oracle))}")
line("adapter confidence fresh", fresh_conf, plain_conf, "adapter confidence plain (what ships)")
