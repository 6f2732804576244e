"""The decision's learning curve (`trainer decide`): what each dev point says, and the curve as a table and a plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.evals.measures import auroc

CURVE_COLUMNS = ["step", "reward", "searched", "first_right", "dev_auroc", "dev_over_search", "dev_under_search",
                 "dev_accuracy", "dev_searches", "dev_sem", "dev_read", "dev_auroc_year", "dev_auroc_name",
                 "dev_auroc_form", "step_s"]  # fmt: skip


def _share(flags: Sequence[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def curve_point(answers: Sequence[Any], forms: Sequence[str] | None = None) -> dict[str, Any]:
    """One dev point from greedy answers (`trainer.train.decide.DevAnswer`): AUROC of P(search) against the first
    answer being wrong (an unscored answer counts as what the gate did), over-search (searched a right first answer),
    under-search (stopped at a wrong one), accuracy, searches; with `forms` (the answer's kind: year or name) the
    AUROC within each form and the AUROC of P(search) for the form itself, which a decision by knowledge keeps near
    0.5. `sem`: the SEM reward (PAPER.md) as served, exact: a right answer earns 1 unless it searched after a right
    first answer (a redundant search earns nothing), so it weighs accuracy and searching in one number. `read`: the
    accuracy if every first answer were searched after (the reading, apart from the decision)."""
    scores = [a.p_search if a.p_search is not None else float(a.searched) for a in answers]
    wrong = [a.first_wrong for a in answers]
    out: dict[str, Any] = {
        "questions": len(answers), "first_wrong": sum(wrong), "auroc": _round(auroc(scores, wrong)),
        "over_search": _share([a.searched for a in answers if not a.first_wrong]),
        "under_search": _share([not a.searched for a in answers if a.first_wrong]),
        "accuracy": _share([a.right for a in answers]), "searches": _share([a.searched for a in answers]),
        "sem": _share([a.right and not (a.searched and not a.first_wrong) for a in answers]),
        "read": _share([a.read_right for a in answers if a.read_right is not None]),
    }  # fmt: skip
    if forms is not None:
        for name in sorted(set(forms)):
            mine = [i for i, f in enumerate(forms) if f == name]
            out[f"auroc_{name}"] = _round(auroc([scores[i] for i in mine], [wrong[i] for i in mine]))
        kinds = sorted(set(forms))
        out["auroc_form"] = _round(auroc(scores, [f == kinds[-1] for f in forms])) if len(kinds) == 2 else None
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def write_curve(out: Path, title: str = "Dev curve (greedy, as served)") -> None:
    """curve.md (the dev rows) and curve.png (train reward and searches every step; dev AUROC, over- and
    under-search, accuracy and the form's AUROC where measured), from `out/history.json`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trainer.evals.tables import markdown_table

    history = json.loads((out / "history.json").read_text())
    rows = [r for r in history if r.get("dev_questions")]
    (out / "curve.md").write_text(markdown_table(rows, CURVE_COLUMNS, title) + "\n")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r for r in history if "reward" in r]
    for key in ("reward", "searched", "first_right"):
        left.plot([r["step"] for r in steps], [r[key] for r in steps], lw=0.8, label=f"{key} (train rollouts)")
    left.set_xlabel("step")
    left.legend(fontsize=8)
    for key in ("dev_auroc", "dev_over_search", "dev_under_search", "dev_accuracy", "dev_read", "dev_auroc_form"):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        right.plot([s for s, _ in pts], [v for _, v in pts], marker="o", label=key[4:])
    right.set_xlabel("step")
    right.set_ylim(0, 1)
    right.legend(fontsize=8)
    right.set_title("dev, greedy: P(search) after its own first answer")
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=110)
    plt.close(fig)


COMPARED = ("dev_auroc", "dev_searches", "dev_over_search", "dev_under_search")


def compare_curves(runs: Sequence[tuple[str, Path]], out: Path) -> str:
    """Several runs' dev curves side by side (each run's `history.json`): one panel per measure of `COMPARED`,
    a line per run, written to `out` (png); returns the same as a markdown table (a row per run and dev step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from trainer.evals.tables import markdown_table

    fig, axes = plt.subplots(1, len(COMPARED), figsize=(4 * len(COMPARED), 3.6), sharex=True)
    rows = []
    for name, folder in runs:
        points = [r for r in json.loads((folder / "history.json").read_text()) if r.get("dev_questions")]
        rows += [{"run": name, **{k: r.get(k) for k in ("step", *COMPARED)}} for r in points]
        for ax, key in zip(axes, COMPARED, strict=True):
            ax.plot([r["step"] for r in points], [r.get(key) for r in points], marker="o", label=name)
    for ax, key in zip(axes, COMPARED, strict=True):
        ax.set_title(key[4:].replace("_", " "))
        ax.set_xlabel("step")
        ax.set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return markdown_table(rows, ["run", "step", *COMPARED], "Dev curves (greedy, as served), side by side")
