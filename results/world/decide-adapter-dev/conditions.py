"""The session-27 rule's three dev conditions for `auto` with read_fresh, against a baseline run's `confidence`."""

import json
import sys
from pathlib import Path

from trainer.evals.gaterun import GateRun
from trainer.evals.measures import paired_difference

run, policy, base_run = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
questions = {q["id"]: q for q in map(json.loads, Path("runs/world/world/questions.jsonl").read_text().splitlines())}
mine = {o.id: o for o in GateRun.read(run).outcomes if o.policy == policy}
base = {o.id: o for o in GateRun.read(base_run).outcomes if o.policy == "confidence"}
changed = [i for i in mine if questions[i]["changed"]]
rest = [i for i in mine if not questions[i]["changed"]]
unsearched = sum(1 for i in changed if mine[i].searches == 0)
acc = sum(mine[i].right for i in rest) / len(rest)
acc_base = sum(base[i].right for i in rest) / len(rest)
searches = sum(1 for o in mine.values() if o.searches) / len(mine)
fresh = sum(1 for o in mine.values() if o.extra.get("read_fresh"))
diff = paired_difference({i: float(mine[i].right) for i in rest}, {i: float(base[i].right) for i in rest})
every = paired_difference({i: float(o.right) for i, o in mine.items()}, {i: float(base[i].right) for i in mine})
print(
    f"{run} {policy} vs {base_run} confidence: all {sum(o.right for o in mine.values()) / len(mine):.3f} "
    f"(paired {every}); read fresh {fresh}; changed unsearched {unsearched}/{len(changed)} (<= 2: {unsearched <= 2}); "
    f"changed right {sum(mine[i].right for i in changed)}; rest accuracy {acc:.3f} vs {acc_base:.3f} "
    f"(>= -0.02: {acc >= acc_base - 0.02}; paired {diff}); searches {searches:.3f} (<= 0.75: {searches <= 0.75})"
)
print("GO" if unsearched <= 2 and acc >= acc_base - 0.02 and searches <= 0.75 else "NO GO")
