"""The import graph stays one-way (bench -> trainer / service -> sem; clients import nothing of the server), and the
service never loads evaluation material (sem.evaldata) or the trainer."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {  # package -> the top-level packages it must not import
    "sem": {"service", "trainer", "bench", "sem_client"},
    "service": {"trainer", "bench"},
    "trainer": {"service", "bench"},
    "clients/python/sem_client": {"sem", "service", "trainer", "bench"},
}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package: str) -> None:
    wrong = {f"{p.relative_to(ROOT)} imports {sorted(imported(p) & FORBIDDEN[package])}"
             for p in (ROOT / package).rglob("*.py") if imported(p) & FORBIDDEN[package]}  # fmt: skip
    assert not wrong, wrong


def test_the_service_loads_no_evaluation_material() -> None:
    code = ("import sys, service.app, service.main\n"
            "print(sorted(m for m in sys.modules if m.startswith(('sem.evaldata', 'trainer'))))")  # fmt: skip
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout
