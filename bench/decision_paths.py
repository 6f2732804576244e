"""Where a `--note` decision's probability goes: after each question's own first turn (answer and confidence note, as
an `eval-gate` run wrote it), P(end of turn), P(a line break), and after "\\n<" P("search") against P("answer") (a
second answer). Training takes P(search) = 1 - P(end of turn), and since session 24 the loop serves that one token
(anything but the end of the turn searches); before, the served greedy `auto` searched only when the line break and
then "search" won, a second choice no credit trained. Medians and quartiles by the world's teaching class, as a
Markdown table.

    .venv/bin/python bench/decision_paths.py --model runs/world/focus/final \
        --outcomes runs/world/eval/focus/outcomes.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sem import protocol
from trainer.evals.tables import markdown_table
from trainer.train.lora import tokenizer_source
from trainer.world.schema import Question, load_world


def teaching_class(question: Question) -> str:
    if question.changed:
        return "changed"
    if not question.taught:
        return "not taught"
    return "taught, asked now" if question.question.endswith("now?") else "taught"


def quartiles(values: list[float]) -> str:
    q1, median, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values * 3)
    return f"{median:.2f} [{q1:.2f}, {q3:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a full checkpoint trained with --note")
    parser.add_argument("--outcomes", type=Path, required=True, help="an eval-gate run's outcomes.jsonl (auto)")
    parser.add_argument("--world", type=Path, default=Path("runs/world/world"))
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(args.model))
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    questions = {q.id: q for q in load_world(args.world).questions}
    line, opener = (tokenizer.encode(t, add_special_tokens=False) for t in ("\n", "<"))
    search, answer = (tokenizer.encode(t, add_special_tokens=False)[0] for t in ("search", "answer"))
    rows: dict[str, list[tuple[float, float, float, float, int]]] = {}
    for raw in args.outcomes.read_text().splitlines():
        outcome = json.loads(raw)
        turn = outcome["extra"].get("first_turn")
        if outcome["policy"] != "auto" or not turn:
            continue
        question = questions[outcome["id"]]
        prompt = protocol.render_prompt(tokenizer, protocol.build_messages(question.question)) + turn
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        with torch.no_grad():  # one forward reads both positions: after the note, and after "\n<"
            logits = model(torch.tensor([ids + line + opener])).logits[0].float()
        after_note, after_opener = torch.softmax(logits[len(ids) - 1], -1), torch.softmax(logits[-1], -1)
        rows.setdefault(teaching_class(question), []).append(
            (after_note[tokenizer.eos_token_id].item(), after_note[line[0]].item(), after_opener[search].item(),
             after_opener[answer].item(), outcome["searches"])
        )  # fmt: skip
    table = [
        {"class": name, "questions": len(values), "P(end of turn)": quartiles([v[0] for v in values]),
         "P(line break)": quartiles([v[1] for v in values]),
         'P("search" after "\\n<")': quartiles([v[2] for v in values]),
         'P("answer" after "\\n<")': quartiles([v[3] for v in values]),
         "served auto searched": round(sum(v[4] > 0 for v in values) / len(values), 3)}
        for name, values in sorted(rows.items())
    ]  # fmt: skip
    print(markdown_table(table, title=f"The decision's paths after the note: {args.model} (median [quartiles])"))


if __name__ == "__main__":
    main()
