"""How committed results change: a judged run, written under runs/ by a pipeline (`make world`, `make eval-gate`,
`trainer eval-gate --out runs/...`), copied into results/ beside the committed rule that judged it (`trainer
publish-run`, `make publish-run`). No pipeline writes into results/ itself, so rerunning one never overwrites the
evidence, and every published folder says where it came from (published.json) and by which rule (rule.md)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from trainer.evals.gaterun import GATE_FILE, GateRun
from trainer.evals.ledger import committed_rule, head_commit

PROVENANCE, RULE_COPY = "published.json", "rule.md"
# what a judging command leaves in its --out folder: eval-gate, world report, eval, compare
JUDGED = (GATE_FILE, "report.json", "results.json", "comparison.json")


class PublishError(ValueError):
    """A run that cannot be published as asked (the message says what to do)."""


def _copied(run: Path) -> list[Path]:
    """The run's files, relative to it; the labels' corpus (and its indexes) stay behind: large, and rebuilt from the
    labels when missing (trainer.runtime.labels_corpus)."""
    return sorted(p.relative_to(run) for p in run.rglob("*") if p.is_file() and not p.name.startswith("corpus.jsonl"))


def publish_run(run: Path, to: Path, rule: Path, *, replace: bool = False) -> dict[str, Any]:
    """Copy `run` into `to` with `rule` (committed and unchanged: ledger.committed_rule) as rule.md and a
    published.json; files already in `to` are refused unless `replace`, and nothing else there is touched."""
    if not run.is_dir():
        raise PublishError(f"{run} is not a folder: name a judged run under runs/ (an eval-gate or report --out)")
    files = _copied(run)
    if not any(f.name in JUDGED for f in files):
        raise PublishError(f"{run} holds no judged run (none of {', '.join(JUDGED)}): run its judging command first")
    for report in (f for f in files if f.name == GATE_FILE):
        GateRun.read(run / report.parent)  # a half-written eval-gate run fails here, naming its folder
    committed = committed_rule(rule)  # SplitError (a ValueError) where the rule is not committed as it stands
    clashes = [f for f in [*files, Path(PROVENANCE), Path(RULE_COPY)] if (to / f).exists()]
    if clashes and not replace:
        shown = ", ".join(str(to / f) for f in clashes[:3]) + (" ..." if len(clashes) > 3 else "")
        raise PublishError(f"{len(clashes)} files are already in {to} ({shown}): publish to a new folder, or "
                           "--replace (make publish-run ... REPLACE=1) to overwrite them")  # fmt: skip
    for f in files:
        (to / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(run / f, to / f)
    shutil.copyfile(rule, to / RULE_COPY)
    provenance = {"run": str(run), "published": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "commit": head_commit(),
                  "rule": {"path": str(rule), "commit": committed.commit, "committed_at": committed.committed_at},
                  "files": [str(f) for f in files]}  # fmt: skip
    (to / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
    return provenance
