"""One writer for the tables and plots that the trainer's evaluations and bench/ print.

Each report says what it shows (its columns, its axes); how a markdown table is laid out and how a figure is saved
is written here once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trainer.evals.measures import fmt


def markdown_table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str] | None = None,
    title: str | None = None,
    cell: Callable[[Any], str] = fmt,
) -> str:
    """A markdown table of `rows` (dicts), one column per key of `columns` (default: the first row's keys).

    >>> print(markdown_table([{"policy": "never", "accuracy": 0.25}], title="Gate"))
    ## Gate
    <BLANKLINE>
    | policy | accuracy |
    |---|---|
    | never | 0.25 |
    """
    columns = list(columns if columns is not None else (rows[0] if rows else []))
    head = [f"## {title}", ""] if title else []
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(head + lines)


@contextmanager
def figure(path: Path, size: tuple[float, float] = (6, 4), title: str | None = None, columns: int = 1) -> Iterator[Any]:
    """Axes to draw on (`columns` > 1: a row of them); on leaving, the figure is laid out, saved to `path` (PNG,
    120 dpi) and closed."""
    import matplotlib

    matplotlib.use("Agg")  # no display: reports are written by CLIs and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, columns, figsize=size)
    try:
        yield ax
        if title:
            (ax if columns == 1 else ax[0]).set_title(title, fontsize=10)
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def decision_table(gate_run: dict[str, Any]) -> str:
    """The README's one table of how a model decides (`trainer eval-gate`'s gate.json): per policy, accuracy with its
    interval, searches per question, searched-though-known, and the AUROC of its search decision.

    >>> run = {"rows": [{"policy": "never", "accuracy": 0.381, "accuracy_ci": [0.314, 0.443],
    ...                  "searches_per_question": 0.0, "over_search": 0.0, "auroc": None}]}
    >>> print(decision_table(run))
    | policy | right | 95% interval | searches per question | searched though known | AUROC of the decision |
    |---|---|---|---|---|---|
    | never | 0.381 | [0.314, 0.443] | 0.0 | 0.0 | - |
    """
    rows = [{"policy": r["policy"], "right": r["accuracy"], "95% interval": r["accuracy_ci"],
             "searches per question": r["searches_per_question"], "searched though known": r["over_search"],
             "AUROC of the decision": r.get("auroc")} for r in gate_run["rows"]]  # fmt: skip
    return markdown_table(rows)
