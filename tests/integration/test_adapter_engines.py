"""Adapters on engines of their own (`SEM_ADAPTER_ENGINES=own`, issue #42): the world's adapter merged into the
model at start-up and served by a vLLM engine of its own beside the default's, each bound to its own cores."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator

import httpx
import pytest

from service.engines import BIND, split_cores
from tests.conftest import ARTIFACTS, free_port, launch, stop
from tests.integration.test_adapters import TAUGHT, WORLD, WORLD_NAME, ask


@pytest.fixture(scope="module")
def served(settings) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = {"SEM_PORT": str(port), "SEM_HOME": str(settings.home_dir), "SEM_ADAPTERS": f"{WORLD_NAME}={WORLD}",
           "SEM_ADAPTER_ENGINES": "own"}  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    # no binding of the operator's (an in-process engine of an earlier test may have set one in this process)
    args = ["env", "-u", BIND, "-u", "OMP_NUM_THREADS", sys.executable, "-m", "service"]
    proc = launch(args, env, "service-adapter-engines.log", f"{base}/readyz")
    yield base, proc.pid
    stop(proc)


def test_an_adapter_on_its_own_engine_answers_as_the_adapter(served: tuple[str, int], settings) -> None:
    base, _ = served
    cards = {c["id"]: c for c in httpx.get(f"{base}/v1/models").json()["data"]}
    assert WORLD_NAME in cards and cards[WORLD_NAME]["parent"] is None  # merged: not a LoRA over another model
    world_gate = json.loads((WORLD / "sem_gate.json").read_text())
    assert cards[WORLD_NAME]["confidence_threshold"] == world_gate["confidence_threshold"]  # its own gate
    question, year = TAUGHT
    with httpx.Client(base_url=base, timeout=120) as client:
        world = ask(client, question, model=WORLD_NAME, search="never")
        default = ask(client, question, search="never")
    assert world["answer"] == year and world["model"] == WORLD_NAME
    assert default["answer"] != year
    marker = json.loads((settings.home_dir / "models" / f"merged-{WORLD_NAME}" / "sem-asset.json").read_text())
    assert marker["adapter"] == WORLD.name


def test_each_engine_runs_on_its_own_cores(served: tuple[str, int]) -> None:
    """Two engines on this machine's cores split between them, as each engine reports its threads' binding."""
    log = (ARTIFACTS / "service-adapter-engines.log").read_text(errors="replace")
    binds = sorted(re.findall(rf"{BIND}='([^']*)'", log))
    assert binds == sorted(split_cores(os.cpu_count() or 1, 2))  # on 2 cores: "0" and "1"
