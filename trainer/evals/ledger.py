"""The frozen test split, kept frozen by code (../shared/EVALUATION.md, "Splits").

Recipes are chosen on dev as often as one likes. A candidate is run on test only as a final report: with `--final`
and the file that holds the rule choosing between candidates (which measures, which margins), committed before the
run, unchanged since. Every such run is appended to a committed ledger (`results/test-ledger.jsonl`: when, which
model and policies, at which commit, under which rule, with what result), so anyone can count how often the test
split was looked at and check that no rule was written after its results. A final run needs a clean tree (no tracked
file changed since HEAD), checked before it starts and again when it is recorded, so the commit it names is the code
that ran; it names the model as given (an adapter's own path, never the temporary folder it was merged into), and
each rate with the count it is a share of.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

LEDGER = Path("results/test-ledger.jsonl")
# accuracy, searches and AUROC are over all `questions`; over- and under-search over the known / helped ones (`_n`)
HEADLINE = ("questions", "accuracy", "searches_per_question", "over_search", "over_search_n", "under_search",
            "under_search_n", "auroc")  # fmt: skip
# the temporary folder trainer.runtime.servable merges an adapter into: what the engine loads, never a model's name
MERGED_PREFIX = "sem-merged-"


class SplitError(ValueError):
    """A run the split discipline does not allow (the message says what to do instead)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """A committed selection rule: the file, the commit that last changed it, and when."""

    path: str
    commit: str
    committed_at: str


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)


def committed_rule(path: Path) -> Rule:
    """The rule file's last commit; `SplitError` when it is not tracked, or changed since its last commit."""
    path = path.resolve()
    if not path.is_file():
        raise SplitError(f"the selection rule {path} does not exist: write it and commit it before the run it judges")
    cwd = path.parent
    if _git(["ls-files", "--error-unmatch", path.name], cwd).returncode != 0:
        raise SplitError(f"the selection rule {path} is not committed: commit it before the run it judges")
    if _git(["diff", "--quiet", "HEAD", "--", path.name], cwd).returncode != 0:
        raise SplitError(f"the selection rule {path} has changes not committed: a rule is fixed before its results")
    commit, _, when = _git(["log", "-1", "--format=%H %cI", "--", path.name], cwd).stdout.strip().partition(" ")
    if not commit:
        raise SplitError(f"the selection rule {path} has no commit")
    return Rule(str(path), commit, when)


def clean_commit(cwd: Path) -> str:
    """HEAD of the checkout `cwd` is in, when no tracked file differs from it (untracked and ignored files, runs/
    among them, do not count); `SplitError` naming the changed files otherwise."""
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    head = _git(["rev-parse", "HEAD"], cwd)
    if status.returncode != 0 or head.returncode != 0:
        raise SplitError(f"{cwd} is not in a git checkout with a commit: a final run records the commit it ran at")
    # the ledger's own new entries are not code: one final run after another must not need a commit in between
    changed = [line[3:] for line in status.stdout.splitlines() if line.strip() and Path(line[3:]).name != LEDGER.name]
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise SplitError(f"the working tree has changes not committed ({shown}): commit them first, so the commit "
                         "the test ledger records is the code that ran")  # fmt: skip
    return head.stdout.strip()


def check_split(split: str, *, final: bool, rule: Path | None) -> Rule | None:
    """Whether this run may go ahead: any run on train or dev; on test only a `final` one under a committed rule,
    from a clean tree (`clean_commit` of the rule's checkout).

    >>> check_split("dev", final=False, rule=None) is None
    True
    >>> check_split("test", final=False, rule=None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    trainer.evals.ledger.SplitError: the test split is frozen: choose on --split dev; ...
    """
    if split != "test":
        if final:
            raise SplitError("--final is for the test split only")
        return None
    if not final:
        raise SplitError(
            "the test split is frozen: choose on --split dev; to report a candidate once, commit the rule that picks "
            "the winner and pass --final --rule <file>"
        )
    if rule is None:
        raise SplitError("--final needs --rule <file>: the committed rule that picks the winner")
    committed = committed_rule(rule)
    clean_commit(Path(committed.path).parent)
    return committed


def head_commit(cwd: Path | None = None) -> str | None:
    done = _git(["rev-parse", "HEAD"], cwd or Path.cwd())
    return done.stdout.strip() or None if done.returncode == 0 else None


def record(ledger: Path, rule: Rule, *, model: str | None, policies: list[str], labels: str, out: str,
           rows: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """Append one test run to the ledger (what was judged, under which rule, with which headline result).
    `SplitError`, writing nothing, when the rule's checkout has uncommitted changes or `model` is a temporary merge."""
    if model and Path(model).name.startswith(MERGED_PREFIX):
        raise SplitError(f"{model} is a temporary merge: record the adapter's own path (what --model named)")
    commit = clean_commit(Path(rule.path).parent)
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": model,
        "policies": policies,
        "labels": labels,
        "out": out,
        "commit": commit,
        "rule": asdict(rule),
        "results": {r["policy"]: {k: r.get(k) for k in HEADLINE} for r in rows},
    }
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with ledger.open("a") as f:
        f.write(json.dumps(entry) + "\n")
    return entry


def read_ledger(ledger: Path = LEDGER) -> list[dict[str, Any]]:
    if not ledger.is_file():
        return []
    return [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]
