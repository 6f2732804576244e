"""The documentation: the mkdocs site builds strictly (every link and anchor resolves) and the README stays short."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 250


def test_docs_build_strictly(tmp_path: Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr}\n{result.stdout}"
    assert (tmp_path / "site" / "index.html").is_file()


def test_readme_is_short() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md: {len(lines)} lines, over {README_MAX_LINES}; move it to docs/"


def test_readme_table_is_the_committed_world_adapter_run() -> None:
    """The README's table of how the served world model decides is generated from its committed run, not typed."""
    import json

    from trainer.evals.tables import decision_table

    run = json.loads((ROOT / "results/world/adapter-dev/gate.json").read_text())
    assert decision_table(run) in (ROOT / "README.md").read_text()


# "0.914 [0.888, 0.940]" in the docs; in result files also a markdown table's "0.914 | [0.888, 0.94]" and
# "0.024 | 420 | [0.002, 0.048]" (value, count, interval)
NUMBER = r"([-+]?\d+(?:\.\d+)?)"
DOC_INTERVAL = re.compile(rf"{NUMBER} \[{NUMBER}, {NUMBER}\]")
FILE_INTERVAL = re.compile(rf"{NUMBER} (?:\| (?:\d+ \| )?)?\[{NUMBER}, {NUMBER}\]")


def _intervals_in(value: object, out: set[tuple[float, ...]]) -> None:
    """(value, low, high) of every `x` beside `x_ci` (and `difference` beside `ci`) in a result file's JSON."""
    if isinstance(value, dict):
        for key, item in value.items():
            base = key[:-3] if key.endswith("_ci") else "difference" if key == "ci" else None
            if base and isinstance(value.get(base), int | float) and isinstance(item, list) and len(item) == 2:
                out.add(tuple(round(float(x), 3) for x in (value[base], *item)))
            _intervals_in(item, out)
    elif isinstance(value, list):
        for item in value:
            _intervals_in(item, out)


def committed_intervals() -> set[tuple[float, ...]]:
    found: set[tuple[float, ...]] = set()
    for path in (ROOT / "results").rglob("*"):
        if path.suffix == ".json":
            _intervals_in(json.loads(path.read_text()), found)
        elif path.suffix in (".md", ".txt"):
            found |= {tuple(round(float(x), 3) for x in m.groups()) for m in FILE_INTERVAL.finditer(path.read_text())}
    return found


@pytest.mark.parametrize(("document", "at_least"), [("docs/results.md", 50), ("README.md", 5), ("docs/world.md", 1)])
def test_every_interval_in_a_results_document_is_in_a_committed_result_file(document: str, at_least: int) -> None:
    """The result documents are typed by hand around their tables; every number they give with an interval must be
    one a committed result file holds (same value and bounds, to 3 decimals), so a typo or a stale number fails."""
    text = (ROOT / document).read_text()
    committed = committed_intervals()
    missing = [
        f"line {text[: m.start()].count(chr(10)) + 1}: {m.group(0)}"
        for m in DOC_INTERVAL.finditer(text)
        if tuple(round(float(x), 3) for x in m.groups()) not in committed
    ]
    assert len(DOC_INTERVAL.findall(text)) >= at_least  # the pattern still finds the document's numbers
    assert not missing, f"{document} gives intervals no file under results/ holds: " + "; ".join(missing)
