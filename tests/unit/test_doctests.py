"""The `>>>` examples in the core's docstrings are tests too."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["sem.protocol", "sem.cache", "sem.engines.base", "sem.search.registry", "sem.search.milvus", "sem.keys",
           "sem.loop", "sem.gate", "sem.evaldata.benchmarks", "trainer.data", "trainer.evals.labels",
           "sem_client._tools",
           "trainer.options", "trainer.sft", "trainer.decision", "trainer.evals.measures", "trainer.evals.ledger",
           "trainer.evals.runs", "trainer.evals.summary", "trainer.evals.promotion",
           "sem.engines.vllm"]  # fmt: skip


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
