"""Two training processes on CPU (`accelerate launch`, gloo), the rank logic of a multi-GPU run: parameters moved and
equal across ranks after every step, one log line a step, a prompt group split across the ranks sampled apart
(bench/two_ranks.py does the run and the checks; ~100 s on 2 cores)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_two_cpu_ranks_train_in_step(tmp_path: Path, settings) -> None:  # settings: the embedded model is there
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "two_ranks.py"), "--out", str(tmp_path), "--steps", "2"],
                         capture_output=True, text=True, timeout=900, cwd=ROOT)  # fmt: skip
    assert run.returncode == 0 and "all checks held" in run.stdout, run.stdout[-2000:] + run.stderr[-4000:]
