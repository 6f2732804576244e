"""The `>>>` examples in the core's docstrings are tests too."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["sem.protocol", "sem.cache", "sem.engines.base", "sem.search.registry", "sem.search.milvus",
           "sem.search.costly", "sem.rate", "sem.keys", "sem.turns", "sem.confidence", "sem.gate", "sem.citations",
           "sem.tool_results", "sem.budget", "sem.domains",
           "sem.evaldata.benchmarks", "sem.engines.vllm",
           "sem_client._tools", "trainer.data", "trainer.train.sft", "trainer.train.decision", "trainer.train.rewards",
           "trainer.evals.labels", "trainer.evals.options", "trainer.evals.decision", "trainer.evals.measures",
           "trainer.evals.ledger", "trainer.evals.runs", "trainer.evals.summary",
           "trainer.evals.promotion", "trainer.evals.tables", "trainer.world.replay"]  # fmt: skip


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
