"""Dev probe (not a judged result): what `auto`/`confidence` would score if the answer after the gate's search were
written fresh (the question and results alone, as `always` reads) -- per question: searched -> always's answer."""

import json
from pathlib import Path

from trainer.evals.measures import paired_difference


def load(path, policy):
    return {o["id"]: o for o in map(json.loads, Path(path).read_text().splitlines()) if o["policy"] == policy}


c40_auto = load("results/world/focus40-dev/focus40/outcomes.jsonl", "auto")
c40_always = load("results/world/fresh-dev/c40-always/outcomes.jsonl", "always")
ad_conf = load("results/world/focus-dev/adapter/outcomes.jsonl", "confidence")
ad_always = load("results/world/focus-dev/adapter/outcomes.jsonl", "always")
questions = {q["id"]: q for q in map(json.loads, Path("runs/world/world/questions.jsonl").read_text().splitlines())}
changed = {i for i in c40_auto if questions[i]["changed"]}


def fresh(gate, always):
    return {i: (always[i]["right"] if o["searches"] else o["right"]) for i, o in gate.items()}


ids = sorted(c40_auto)
rows = {
    "auto": {i: c40_auto[i]["right"] for i in ids},
    "auto fresh": fresh(c40_auto, c40_always),
    "adapter confidence": {i: ad_conf[i]["right"] for i in ids},
    "adapter confidence fresh": fresh(ad_conf, ad_always),
    "c40 always": {i: c40_always[i]["right"] for i in ids},
    "adapter always": {i: ad_always[i]["right"] for i in ids},
}
print("changed ids:", len(changed))
for name, r in rows.items():
    print(f"{name:26s} all {sum(r.values()) / len(ids):.3f} changed {sum(r[i] for i in changed)}/{len(changed)}")
rest = [i for i in ids if i not in changed]
for a, b in [
    ("auto fresh", "adapter confidence"),
    ("auto fresh", "adapter confidence fresh"),
    ("auto", "adapter confidence"),
    ("adapter confidence fresh", "adapter confidence"),
]:
    d = paired_difference({i: float(rows[a][i]) for i in rest}, {i: float(rows[b][i]) for i in rest})
    print(f"rest {a} - {b}: {d}")
