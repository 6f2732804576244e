"""Citation benchmark: how well `sem.citations` picks the passages an answer rests on. Prints a Markdown table.

Real answers on real questions: the `always` answers of the gate runs (results/gate/*, read as
`trainer.evals.gaterun.GateRun`: the model's answer after one search with the question itself) and that search again
(BM25, the labels' corpus, top 3, cut at 600 characters as inserted). On the questions whose gold is in those
results, each judge cites passages for the model's answer; precision is the share of cited passages that hold the
gold, recall the share of the passages that hold the gold that are cited. Rows for every answer and for right answers
only (a wrong answer's words found in a passage are a true citation of a wrong claim: precision against the gold
counts them as misses).

    .venv/bin/python bench/citations.py [--runs results/gate/tuned-reading ...] [--out bench/results/citations.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sem import protocol
from sem.citations import Judge, cite
from sem.search.bm25 import BM25Backend
from trainer.evals.gaterun import GateRun, GateRunError
from trainer.evals.labels import found_in, read_labels
from trainer.evals.tables import markdown_table

RUNS = ["results/gate/tuned-reading", "results/gate/base-reading", "results/gate/own-sft-r4",
        "results/gate/own-sft-r4-grpo-ikea"]  # fmt: skip  # the runs whose `always` answers saw the gold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", nargs="+", default=RUNS)
    parser.add_argument("--labels", type=Path, default=Path("results/gate/base/labels/labels.jsonl"))
    parser.add_argument("--corpus", type=Path, default=Path("results/gate/base/labels/corpus.jsonl"))
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--passage-chars", type=int, default=600)
    parser.add_argument("--out", type=Path, default=Path("bench/results/citations.json"))
    args = parser.parse_args()
    try:
        runs = [GateRun.read(Path(run)) for run in args.runs]
    except GateRunError as exc:
        parser.error(str(exc))

    examples = {lab.example.id: lab.example for lab in read_labels(args.labels)}
    backend = BM25Backend(args.corpus)
    backend.load_sync()
    cases, agree, seen = [], 0, 0
    for run in runs:
        for answer in run.answers("always"):
            example = examples.get(answer.id)
            if example is None or "gold_in_results" not in answer.extra:
                continue
            (passages,) = backend.search_sync([example.prompt_text()], args.top_k)
            shown = [p.model_copy(update={"text": p.text[: args.passage_chars]}) for p in passages]
            holds = {p.id for p in shown if found_in(protocol.format_result([p]), example)}
            seen += 1
            agree += bool(holds) == answer.extra["gold_in_results"]  # the search reproduced as the run saw it
            if holds:
                cases.append((answer, shown, holds))

    rows = []
    for judge in Judge:
        for subset, right_only in (("all answers", False), ("right answers", True)):
            tp = cited = gold = n = 0
            for answer, shown, holds in cases:
                if right_only and not answer.right:
                    continue
                ids = {c.passage_id for c in cite(answer.answer, [shown], judge=judge)}
                n, tp, cited, gold = n + 1, tp + len(ids & holds), cited + len(ids), gold + len(holds)
            rows.append({"judge": judge.value, "answers": subset, "questions": n, "cited": cited,
                         "gold_passages": gold, "precision": round(tp / cited, 3) if cited else None,
                         "recall": round(tp / gold, 3) if gold else None})  # fmt: skip
    print(f"{seen} `always` answers re-searched, {agree} with the gold found as the run found it; "
          f"{len(cases)} with the gold in the results\n")  # fmt: skip
    print(markdown_table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": args.runs, "searched": seen, "agree": agree, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
