"""`trainer compare`: several `trainer eval` runs (e.g. base and tuned) in one table, one plot and a check of the
SEM targets: search on needs-search questions, no search on known ones, fewer searches than always-search, and
accuracy kept against the no-retrieval and naive-RAG baselines of the base model."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainer.evals.tables import figure, markdown_table

KINDS = ("needs_search", "known", "all")


@dataclass
class KindRow:
    model: str
    policy: str
    kind: str
    n: int
    em: float
    f1: float
    search_ratio: float
    searches_per_question: float


@dataclass
class Target:
    what: str
    value: float
    bound: float
    met: bool


def read_outcomes(results: Path) -> list[dict[str, Any]]:
    """A `trainer eval` run's outcomes (trainer.evals.runs.Outcome as dicts). One written before `trainer eval` wrote
    that record (the committed results/sem-smollm2/) had `kind` and `em` at the top level: it reads the same."""
    rows = json.loads(results.read_text())["outcomes"]
    return [{**o, "klass": o["kind"], "extra": {"em": o["em"]}} if "klass" not in o else o for o in rows]


def kind_rows(label: str, outcomes: list[dict[str, Any]]) -> list[KindRow]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for o in outcomes:
        groups[(o["policy"], o["klass"])].append(o)
        groups[(o["policy"], "all")].append(o)
    rows = []
    for (policy, kind), items in groups.items():
        n = len(items)
        rows.append(KindRow(
            model=label, policy=policy, kind=kind, n=n,
            em=round(sum(o["extra"]["em"] for o in items) / n, 3),
            f1=round(sum(o["f1"] for o in items) / n, 3),
            search_ratio=round(sum(o["searches"] > 0 for o in items) / n, 3),
            searches_per_question=round(sum(o["searches"] for o in items) / n, 3),
        ))  # fmt: skip
    return rows


def targets(rows: list[KindRow], tuned: str, base: str) -> list[Target]:
    def get(model: str, policy: str, kind: str) -> KindRow:
        return next(r for r in rows if (r.model, r.policy, r.kind) == (model, policy, kind))

    t_need, t_known, t_all = (get(tuned, "auto", k) for k in KINDS)
    always_all = get(base, "always", "all").searches_per_question
    return [
        Target("search ratio, needs-search (tuned, auto) >=", t_need.search_ratio, 0.9, t_need.search_ratio >= 0.9),
        Target("search ratio, known (tuned, auto) <=", t_known.search_ratio, 0.1, t_known.search_ratio <= 0.1),
        Target(
            "searches / question, all (tuned auto / base always) <=",
            round(t_all.searches_per_question / always_all, 3) if always_all else 0.0,
            0.6,
            t_all.searches_per_question <= 0.6 * always_all,
        ),
        Target(
            "F1 needs-search: tuned auto - base always >=",
            round(t_need.f1 - get(base, "always", "needs_search").f1, 3),
            0.0,
            t_need.f1 >= get(base, "always", "needs_search").f1,
        ),
        Target(
            "F1 known: tuned auto - base never >=",
            round(t_known.f1 - get(base, "never", "known").f1, 3),
            0.0,
            t_known.f1 >= get(base, "never", "known").f1,
        ),
    ]


def markdown(rows: list[KindRow], checks: list[Target]) -> str:
    table = [{"model": r.model, "policy": r.policy, "questions": r.kind, "n": r.n, "EM": f"{r.em:.3f}",
              "F1": f"{r.f1:.3f}", "search ratio": f"{r.search_ratio:.2f}",
              "searches / question": f"{r.searches_per_question:.2f}"} for r in rows]  # fmt: skip
    targets = [{"target": t.what, "measured": f"{t.value:.3f}", "bound": f"{t.bound:g}",
                "met": "yes" if t.met else "**no**"} for t in checks]  # fmt: skip
    return markdown_table(table, cell=str) + "\n\n" + markdown_table(targets, cell=str) + "\n"


def plot(rows: list[KindRow], path: Path) -> None:
    """Search ratio (left) and F1 (right) on needs-search and known questions, per model and policy."""
    bars = [(r.model, r.policy) for r in rows if r.kind == "all"]
    width = 0.38
    with figure(path, size=(11, 4.2), columns=2) as axes:
        for ax, field, label in ((axes[0], "search_ratio", "search ratio"), (axes[1], "f1", "F1 (MMLU: accuracy)")):
            for i, kind in enumerate(("needs_search", "known")):
                values = [next(getattr(r, field) for r in rows if (r.model, r.policy, r.kind) == (m, p, kind))
                          for m, p in bars]  # fmt: skip
                xs = [j + (i - 0.5) * width for j in range(len(bars))]
                ax.bar(xs, values, width, label=kind.replace("_", "-"), color=("#0b5cad", "#f0a500")[i])
            ax.set_xticks(range(len(bars)), [f"{m}\n{p}" for m, p in bars], fontsize=8)
            ax.set_ylabel(label)
            ax.set_ylim(0, 1.05)
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=8)
        axes[0].set_title("When does it search?")
        axes[1].set_title("How well does it answer?")


def compare(runs: dict[str, Path], out: Path, tuned: str, base: str) -> tuple[list[KindRow], list[Target]]:
    rows: list[KindRow] = []
    for label, results in runs.items():
        rows += kind_rows(label, read_outcomes(results))
    order = {m: i for i, m in enumerate(runs)} | {p: i for i, p in enumerate(("auto", "never", "always", "budget"))}
    rows.sort(key=lambda r: (order[r.model], order.get(r.policy, 9), KINDS.index(r.kind)))
    checks = targets(rows, tuned, base)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(markdown(rows, checks))
    report = {"rows": [asdict(r) for r in rows], "targets": [asdict(t) for t in checks]}
    (out / "comparison.json").write_text(json.dumps(report, indent=2))
    plot(rows, out / "comparison.png")
    return rows, checks
