"""The import graph stays one-way (bench -> trainer / service -> sem; clients import nothing of the server), and so do
the trainer's phases (commands -> train -> evals.labels, evals -> data); the service never loads evaluation material
(sem.evaldata) or the trainer."""

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

# Within the trainer: what each phase may import of it (module prefixes). Judging a model loads no training code;
# training reads the labels the evaluation phase writes, nothing else of it; neither reaches for the CLI's commands or
# runtime (which import both).
TRAINER_PHASES = {
    "trainer/data.py": (),
    "trainer/evals": ("trainer.data", "trainer.evals"),
    "trainer/train": ("trainer.data", "trainer.train", "trainer.evals.labels"),
}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, by its full dotted name (`from a.b import c` -> a.b.c, c being a module or not)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package: str) -> None:
    wrong = {f"{p.relative_to(ROOT)} imports {sorted(imported(p) & FORBIDDEN[package])}"
             for p in (ROOT / package).rglob("*.py") if imported(p) & FORBIDDEN[package]}  # fmt: skip
    assert not wrong, wrong


@pytest.mark.parametrize("part", sorted(TRAINER_PHASES))
def test_the_trainers_phases_import_one_way(part: str) -> None:
    def allowed(name: str) -> bool:
        return not name.startswith("trainer.") or any(f"{name}.".startswith(f"{a}.") for a in TRAINER_PHASES[part])

    files = [ROOT / part] if part.endswith(".py") else sorted((ROOT / part).rglob("*.py"))
    assert files and all(f.is_file() for f in files), part
    wrong = {f"{f.relative_to(ROOT)} imports {m}" for f in files for m in imported_modules(f) if not allowed(m)}
    assert not wrong, wrong


def test_the_phases_modules_are_not_left_at_the_old_flat_paths() -> None:
    """The phases' modules live in their packages (issue #32): nothing is re-exported at the old flat paths."""
    moved = ["config", "sft", "grpo", "rollout", "vllm_rollout", "rewards", "lora",
             "evaluate", "compare", "ablation", "decision", "likelihood", "options", "gate"]  # fmt: skip
    assert not [m for m in moved if (ROOT / "trainer" / f"{m}.py").exists()]


def test_the_service_loads_no_evaluation_material() -> None:
    code = ("import sys, service.app, service.main\n"
            "print(sorted(m for m in sys.modules if m.startswith(('sem.evaldata', 'trainer'))))")  # fmt: skip
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout
