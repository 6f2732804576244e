"""Session 28's rule on test: the run on the cheaper step, read fresh, judged as session 27's candidate (against the
adapter's `confidence` read fresh) and beside session 26's checkpoint read fresh (session 27's test run)."""

import json
from pathlib import Path

from trainer.evals.gaterun import GateRun
from trainer.evals.measures import paired_difference

questions = {q["id"]: q for q in map(json.loads, Path("runs/world/world/questions.jsonl").read_text().splitlines())}


def load(run: str, policy: str) -> dict:
    return {o.id: o for o in GateRun.read(Path(run)).outcomes if o.policy == policy}


def right(o: dict) -> dict:
    return {i: float(x.right) for i, x in o.items()}


base = load("results/world/fresh-test/adapter-fresh", "confidence")
oracle = load("results/world/focus40-test/focus40", "oracle")  # session 26's, the target's reference
report: dict = {}
for policy in ("auto", "either", "confidence"):
    mine = load("results/world/fast-test/fast-fresh", policy)
    old = load("results/world/fresh-test/focus40-fresh", policy)
    changed = [i for i in mine if questions[i]["changed"]]
    rest = {i: v for i, v in right(mine).items() if not questions[i]["changed"]}
    row = {
        "accuracy": round(sum(right(mine).values()) / len(mine), 3),
        "searches": round(sum(1 for o in mine.values() if o.searches) / len(mine), 3),
        "changed_searched": f"{sum(1 for i in changed if mine[i].searches)}/{len(changed)}",
        "rest_vs_adapter_confidence_fresh": paired_difference(rest, right(base)),
        "all_vs_adapter_confidence_fresh": paired_difference(right(mine), right(base)),
        "all_vs_session26_checkpoint_fresh": paired_difference(right(mine), right(old)),
        "all_vs_session26_oracle": paired_difference(right(mine), right(oracle)),
    }
    report[policy] = row
    print(policy, row)
Path("results/world/fast-test/judged.json").write_text(json.dumps(report, indent=1) + "\n")
