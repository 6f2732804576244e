"""One `trainer eval-gate` run folder, read and written in one place: `gate.json` (the summary), `outcomes.jsonl`
(every answer, one `Outcome` a line), `gate.md` and `gate.png` (for people). Every command that reads a run (world
report, gate-table, promote, README's table) goes through `GateRun.read`, and the `name=<folder>` options are parsed
by `named_run` / `named_file`, so a run's layout and the option's syntax are written down once."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:  # imported where used: the CLI builds its options from this module at every start
    from trainer.evals.labels import Label
    from trainer.evals.runs import Outcome

GATE_FILE, OUTCOMES_FILE, REPORT_FILE, PLOT_FILE = "gate.json", "outcomes.jsonl", "gate.md", "gate.png"


class GateRunError(ValueError):
    """A folder that is not a readable eval-gate run (the message says which file is missing or wrong)."""


@dataclass(slots=True)
class GateRun:
    """What one eval-gate run holds. The fields are gate.json's keys, in the order it has always written them;
    runs saved before a key existed (`labels`, `option_likelihood`, `comparisons`) read it as None."""

    split: str
    model: str | None
    labels: str | None  # the labels file the run was judged against
    confidence_threshold: float | None
    rows: list[dict[str, Any]]  # one per policy (trainer.evals.summary.summarise)
    classes: dict[str, dict[str, int]]  # per source, then "all": known / helped / neither
    option_likelihood: dict[str, Any] | None = None
    comparisons: list[dict[str, Any]] | None = None
    outcomes: list[Outcome] = field(default_factory=list)  # outcomes.jsonl, not gate.json
    folder: Path | None = None  # where it was read from or saved to

    @classmethod
    def judged(cls, outcomes: list[Outcome], labels: list[Label], *, split: str, model: str | None, labels_file: Path,
               threshold: float | None, options: dict[str, Any] | None = None) -> GateRun:  # fmt: skip
        """A run from its answers: the oracle added where `never` and `always` both ran, every policy summarised,
        and each paired against `never` and `always`."""
        from trainer.evals.labels import class_counts
        from trainer.evals.runs import oracle
        from trainer.evals.summary import compare, summarise

        policies = {o.policy for o in outcomes}
        if {"never", "always"} <= policies:
            outcomes = [*outcomes, *oracle(outcomes)]
        ran = list(dict.fromkeys(o.policy for o in outcomes))
        comparisons = [compare(outcomes, a, b) for a in ran for b in ("never", "always") if b in ran and a != b]
        return cls(split, model, str(labels_file), threshold, summarise(outcomes, labels), class_counts(labels),
                   options, comparisons, outcomes)  # fmt: skip

    @classmethod
    def read(cls, folder: Path) -> GateRun:
        """The run in `folder`; `GateRunError` names the missing or unreadable file."""
        from trainer.evals.runs import Outcome

        folder = Path(folder)
        report, answers = folder / GATE_FILE, folder / OUTCOMES_FILE
        if not report.is_file():
            raise GateRunError(
                f"{folder} holds no eval-gate run (no {GATE_FILE}): name a `trainer eval-gate --out` folder"
            )
        if not answers.is_file():
            raise GateRunError(f"{folder} has {GATE_FILE} but no {OUTCOMES_FILE}: the run did not finish writing")
        try:
            data = json.loads(report.read_text())
            outcomes = [Outcome(**json.loads(line)) for line in answers.read_text().splitlines() if line.strip()]
            return cls(data["split"], data.get("model"), data.get("labels"), data.get("confidence_threshold"),
                       data.get("rows", []), data.get("classes", {}), data.get("option_likelihood"),
                       data.get("comparisons"), outcomes, folder)  # fmt: skip
        except (ValueError, TypeError, KeyError) as exc:  # bad JSON, a missing split, an unknown outcome field
            raise GateRunError(f"{folder} is not a readable eval-gate run: {exc!r}") from exc

    @property
    def questions(self) -> int:
        return sum(self.classes.get("all", {}).values())

    @property
    def labels_file(self) -> Path:
        """The labels it was judged against: named in gate.json, else its own labels/ folder (older runs)."""
        return Path(self.labels) if self.labels else (self.folder or Path()) / "labels" / "labels.jsonl"

    def answers(self, policy: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.policy == policy]

    def policies(self) -> list[str]:
        return list(dict.fromkeys(o.policy for o in self.outcomes))

    def gate_json(self) -> str:
        """gate.json's text, byte for byte as eval-gate has always written it (committed runs compare equal)."""
        keys = ("split", "model", "labels", "confidence_threshold", "rows", "classes", "option_likelihood",
                "comparisons")  # fmt: skip
        return json.dumps({k: getattr(self, k) for k in keys}, indent=2) + "\n"

    def report(self, title: str) -> str:
        """gate.md: the table, the paired differences, the classes (trainer.evals.summary.markdown)."""
        from trainer.evals.summary import markdown

        full = f"{title} ({self.split}, {self.questions} questions; confidence threshold {self.confidence_threshold})"
        return markdown(self.rows, self.classes, full, self.option_likelihood, self.comparisons or ())

    def save(self, folder: Path, title: str) -> str:
        """Write the four files into `folder`; returns gate.md's text."""
        from trainer.evals.summary import plot

        folder.mkdir(parents=True, exist_ok=True)
        text = self.report(title)
        (folder / REPORT_FILE).write_text(text)
        (folder / GATE_FILE).write_text(self.gate_json())
        with (folder / OUTCOMES_FILE).open("w") as f:
            f.writelines(json.dumps(asdict(o)) + "\n" for o in self.outcomes)
        plot(self.rows, folder / PLOT_FILE, title)
        self.folder = folder
        return text


@dataclass(frozen=True, slots=True)
class NamedRun:
    name: str
    run: GateRun


@dataclass(frozen=True, slots=True)
class NamedFile:
    name: str
    path: Path


def _split(item: str, expected: str) -> tuple[str, Path]:
    name, sep, path = item.partition("=")
    if not sep or not name or not path:
        raise typer.BadParameter(f"{item!r}: expected name={expected}")
    return name, Path(path)


def named_run(item: str) -> NamedRun:
    """`name=<eval-gate folder>`, as a typer `parser`: a bad value fails at parse time, naming the option."""
    name, path = _split(item, "<a `trainer eval-gate --out` folder>")
    try:
        return NamedRun(name, GateRun.read(path))
    except GateRunError as exc:
        raise typer.BadParameter(f"{item!r}: {exc}") from exc


def named_file(item: str) -> NamedFile:
    """`name=<an existing file>` (e.g. `trainer eval`'s results.json), as a typer `parser`."""
    name, path = _split(item, "<an existing file>")
    if not path.is_file():
        raise typer.BadParameter(f"{item!r}: {path} is not a file")
    return NamedFile(name, path)
