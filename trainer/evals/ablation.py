"""`trainer gate-table`: several `trainer eval-gate` runs (models x policies) in one table and one plot, the
ablations of issue #18 side by side: every model judged on the same frozen test questions, each against its own
labels (over/under-search), with the first answer's quality on open questions and the multiple-choice letter share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainer.evals.gaterun import GateRun
from trainer.evals.labels import read_labels
from trainer.evals.summary import summarise
from trainer.evals.tables import figure, markdown_table

COLUMNS = ["model", "policy", "accuracy", "accuracy_ci", "f1", "open_closed_book_f1", "searches_per_question",
           "over_search", "under_search", "auroc", "auroc_same_form", "read_accuracy", "readable",
           "mc_top_letter_share", "known", "helped"]  # fmt: skip
DETAILS = ["auroc_ci", "unscored", "generated_tokens", "engine_calls"]  # in the JSON, not the table


def gate_rows(model: str, run: GateRun) -> list[dict[str, Any]]:
    """One row per policy of one eval-gate run; the open-question F1 under `never` is the first answer's.

    Where the run's labels are at hand (named in gate.json, or in its labels/ folder), its saved answers are scored
    again with today's measures, so runs made before a measure was added still get it.
    """
    counts = run.classes["all"]
    fresh = run.labels_file.is_file()
    scored = summarise(run.outcomes, read_labels(run.labels_file, run.split)) if fresh else run.rows
    rows = []
    for r in scored:
        rows.append({
            "model": model, **{k: r.get(k) for k in (*COLUMNS, *DETAILS) if k in r},
            "open_closed_book_f1": r.get("open_f1") if r["policy"] == "never" else None,
            "mc_top_letter_share": (r.get("letters") or {}).get("top_share"),
            "known": counts["known"], "helped": counts["helped"],
        })  # fmt: skip
    return rows


def markdown(rows: list[dict[str, Any]], title: str) -> str:
    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, list | tuple):
            return f"({value[0]}, {value[1]})"
        return str(value)

    return markdown_table(rows, COLUMNS, title, cell=cell) + "\n"


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Accuracy against searches per question: one colour per model, one point per policy."""
    import matplotlib.pyplot as plt

    with figure(path, size=(7.5, 4.8), title=title) as ax:
        models = list(dict.fromkeys(r["model"] for r in rows))
        colours = plt.get_cmap("tab10" if len(models) <= 10 else "tab20")  # tab10 repeats its colours after ten
        for i, model in enumerate(models):
            mine = [r for r in rows if r["model"] == model and r["policy"] != "oracle"]
            ax.scatter([r["searches_per_question"] for r in mine], [r["accuracy"] for r in mine], s=55,
                       color=colours(i), label=model)  # fmt: skip
            for r in mine:
                ax.annotate(r["policy"], (r["searches_per_question"], r["accuracy"]), textcoords="offset points",
                            xytext=(5, 3), fontsize=8, color=colours(i))  # fmt: skip
        ax.set_xlabel("searches per question")
        ax.set_ylabel("accuracy (test split)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
