"""README's gate table, generated from the committed result files (never typed by hand), and checked against them.

`trainer readme-table` rewrites the block between the markers in README.md; `--check` only says whether it agrees
(the test suite runs the check). Saved answers are scored again with today's measures where their labels are at
hand (`trainer.evals.ablation.gate_rows`), so the table and `trainer gate-table` always read the same numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.evals.ablation import gate_rows
from trainer.evals.gaterun import GateRun
from trainer.evals.measures import MIN_COUNT, TOO_FEW, fmt

START, END = "<!-- gate-table:start -->", "<!-- gate-table:end -->"
# (model, eval-gate folder, the policies of it that README shows): the served default and its baselines
README_RUNS: list[tuple[str, str, tuple[str, ...]]] = [
    ("base", "results/gate/base", ("never", "always", "confidence")),
    ("tuned", "results/gate/tuned", ("never", "always")),
    ("tuned", "results/gate/tuned-auto", ("auto",)),
]
HEADER = ("| model | policy | accuracy [95% CI] | searches / q | over-search (known) | under-search (helped) | "
          "AUROC [95% CI] (within a form) | tokens | engine calls |")  # fmt: skip


def _class_rate(value: float | None, n: int) -> str:
    if value is None:
        return f"- (n={n})"
    return f"{fmt(value)} (n={n}, {TOO_FEW})" if n < MIN_COUNT else f"{fmt(value)} (n={n})"


def _row(row: dict[str, Any]) -> str:
    auroc = "-"
    if row.get("auroc") is not None:
        auroc = f"{fmt(row['auroc'])} {fmt(row.get('auroc_ci'))} ({fmt(row.get('auroc_same_form'))})"
    cells = [
        row["model"], row["policy"], f"{fmt(row['accuracy'])} {fmt(row['accuracy_ci'])}",
        fmt(row["searches_per_question"]), _class_rate(row["over_search"], row["known"]),
        _class_rate(row["under_search"], row["helped"]), auroc, fmt(row.get("generated_tokens")),
        fmt(row.get("engine_calls")),
    ]  # fmt: skip
    return "| " + " | ".join(str(c) for c in cells) + " |"


def gate_table(root: Path, runs: list[tuple[str, str, tuple[str, ...]]] = README_RUNS) -> str:
    """The table's markdown, from the result files under `root` (the repository)."""
    lines = [HEADER, "|" + "---|" * len(HEADER.strip("| ").split(" | "))]
    for model, folder, policies in runs:
        rows = {r["policy"]: r for r in gate_rows(model, GateRun.read(root / folder))}
        lines += [_row(rows[p]) for p in policies]
    return "\n".join(lines)


def readme_block(readme: str) -> str:
    """What README holds between the markers (ValueError without them)."""
    try:
        _, rest = readme.split(START, 1)
        block = rest.split(END, 1)[0]
    except ValueError as exc:
        raise ValueError(f"README has no {START} ... {END} block") from exc
    return block.strip("\n")


def update_readme(readme_path: Path, root: Path) -> bool:
    """Write the generated table into README; True when it changed."""
    text = readme_path.read_text()
    old = readme_block(text)
    new = gate_table(root)
    if old == new:
        return False
    readme_path.write_text(text.replace(f"{START}\n{old}\n{END}", f"{START}\n{new}\n{END}"))
    return True
