"""The documentation: the mkdocs site builds strictly (every link and anchor resolves) and the README stays short."""

import os
import subprocess
import sys
from pathlib import Path

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
