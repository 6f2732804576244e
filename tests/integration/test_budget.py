"""Search budgets across requests on a real Redis (no model): the atomic check-and-spend under concurrency, between
two clients and two processes, the windows turning over (a clock the test moves), keys' own budgets set by
`sem keys budget`, the in-process fallback, and budgets with the search cache."""

from __future__ import annotations

import asyncio
import itertools
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from sem.budget import PREFIX, SearchBudget, window_bounds
from sem.cache import CachedSearch, RedisStore
from sem.errors import SearchBudgetExhausted
from sem.keys import hash_key, principal_of
from sem.search import guards
from sem.search.bm25 import BM25Backend
from sem.settings import BudgetSettings, Window

_starts = itertools.count()


class Clock:
    """A clock the test moves; each test starts in a window of its own (counters of other tests never meet it)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0 + 40 * 86_400 * next(_starts)

    def __call__(self) -> float:
        return self.now


def settings(**limits: dict[str, int]) -> BudgetSettings:
    return BudgetSettings(**limits)


async def test_concurrent_spends_from_two_clients_never_pass_the_budget(redis_server: str) -> None:
    clock = Clock()
    limits = settings(per_key={"minute": 17}, deployment={"day": 1000})
    a, b = SearchBudget(limits, redis_server, clock=clock), SearchBudget(limits, redis_server, clock=clock)
    verdicts = await asyncio.gather(*((a if i % 2 else b).spend("key:many") for i in range(80)))
    assert a.redis_errors == b.redis_errors == 0  # all counted in Redis (a timeout would count in process)
    assert sum(v.spent for v in verdicts) == 17  # exactly the budget, whichever client spent
    window, _ = window_bounds(Window.minute, clock())
    counts = redis.from_url(redis_server)
    assert int(counts.get(f"{PREFIX}:key:many:minute:{window}")) == 17
    day, _ = window_bounds(Window.day, clock())
    assert int(counts.get(f"{PREFIX}:deployment:day:{day}")) == 17  # a refused spend spends nowhere
    last = await a.check("key:many")
    assert last.exhausted and last.left == 0 and 0 < last.reset_s <= 60
    await asyncio.gather(a.aclose(), b.aclose())


async def test_the_window_turns_over_and_the_budget_is_back(redis_server: str) -> None:
    clock = Clock()
    budget = SearchBudget(settings(per_key={"minute": 3}), redis_server, clock=clock)
    assert [(await budget.spend("key:w")).spent for _ in range(4)] == [True, True, True, False]
    refused = await budget.spend("key:w")
    clock.now += refused.reset_s - 0.001  # the last millisecond of the window: still spent
    assert not (await budget.spend("key:w")).spent
    clock.now += 0.002  # the next window
    fresh = await budget.spend("key:w")
    assert fresh.spent and fresh.left == 2 and fresh.reset_s == pytest.approx(60, abs=0.01)
    await budget.aclose()


async def test_the_deployment_budget_binds_every_key(redis_server: str) -> None:
    clock = Clock()
    budget = SearchBudget(settings(per_key={"day": 5}, deployment={"month": 6}), redis_server, clock=clock)
    spent = [(await budget.spend(f"key:{i % 3}")).spent for i in range(9)]
    assert sum(spent) == 6
    verdict = await budget.check("key:0")
    assert verdict.exhausted and verdict.tightest.limit.scope == "deployment"
    assert "the deployment's 6 per month" in verdict.describe()
    await budget.aclose()


def test_two_processes_share_one_budget(redis_server: str, tmp_path: Path) -> None:
    """Two OS processes spend 40 times each, at once, on a budget of 25: 25 spends in all."""
    script = tmp_path / "spend.py"
    script.write_text(
        textwrap.dedent(f"""
        import asyncio, sys
        from sem.budget import SearchBudget
        from sem.settings import BudgetSettings

        async def main():
            budget = SearchBudget(BudgetSettings(per_key={{"day": 25}}), {redis_server!r}, clock=lambda: 1.7e9 - 86400)
            sys.stdin.readline()  # both processes start spending together
            verdicts = await asyncio.gather(*(budget.spend("key:two-processes") for _ in range(40)))
            print(sum(v.spent for v in verdicts))

        asyncio.run(main())
    """)
    )
    procs = [subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate("go\n", timeout=60)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(int(out) for out in outs) == 25, outs


async def test_a_keys_own_budget_from_sem_keys_budget(redis_server: str) -> None:
    from sem.cli import app

    clock = Clock()
    budget = SearchBudget(settings(per_key={"day": 100}), redis_server, clock=clock)
    me = principal_of(hash_key("sk-own-budget"))
    result = CliRunner().invoke(app, ["keys", "budget", "sk-own-budget", "--day", "2", "--redis-url", redis_server])
    assert result.exit_code == 0 and "2 per day" in result.output, result.output
    assert [(await budget.spend(me)).spent for _ in range(3)] == [True, True, False]
    assert (await budget.spend("key:someone-else")).spent  # the others keep per_key
    printed = CliRunner().invoke(app, ["keys", "budget", "sk-own-budget", "--minute", "1"])  # no Redis: the setting
    assert printed.exit_code == 0 and f'{{"{hash_key("sk-own-budget")}": {{"minute": 1}}}}' in printed.output
    await budget.aclose()


async def test_without_redis_it_counts_in_process_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="sem.budget"):
        budget = SearchBudget(settings(per_key={"minute": 4}))
    assert "counted in this process only" in caplog.text
    verdicts = await asyncio.gather(*(budget.spend("ip:1.2.3.4") for _ in range(10)))
    assert sum(v.spent for v in verdicts) == 4 and budget.store == "memory"


async def test_redis_down_falls_back_to_local_counts(caplog: pytest.LogCaptureFixture) -> None:
    from tests.conftest import free_port

    budget = SearchBudget(settings(per_key={"minute": 2}), f"redis://127.0.0.1:{free_port()}/0")
    with caplog.at_level(logging.WARNING, logger="sem.budget"):
        spent = [(await budget.spend("key:x")).spent for _ in range(3)]
    assert spent == [True, True, False] and "fall back to in-process counts" in caplog.text
    await budget.aclose()


async def test_cache_hits_are_free_unless_counted(redis_server: str, tiny_corpus: Path) -> None:
    backend = BM25Backend(tiny_corpus)
    await backend.load()
    cache = CachedSearch(backend, RedisStore(redis_server))
    for count_hits, expected in ((False, [True, True, True]), (True, [True, True, False])):
        clock = Clock()
        budget = SearchBudget(settings(per_key={"minute": 2}, count_cache_hits=count_hits), redis_server, clock=clock)
        allowance = budget.allowance("key:hits")
        moon, paris = f"Moon satellite {count_hits}", f"capital of France {count_hits}"
        # miss, hit, miss
        found = [await guards.retrieve(cache, [q], 1, allowance=allowance) for q in (moon, moon, paris)]
        assert [not r.budget_exhausted for (r,) in found] == expected
        assert allowance.hits >= 1 and allowance.exhausted is (not all(expected))
        await budget.aclose()
    strict = SearchBudget(settings(per_key={"minute": 0}), redis_server, clock=Clock())
    with pytest.raises(SearchBudgetExhausted) as raised:  # the `always` policy: a 429, not a silent refusal
        await guards.retrieve(cache, ["Hamlet written by"], 1, allowance=strict.allowance("key:strict", strict=True))
    assert raised.value.retry_after_s >= 1 and "search budget is spent" in str(raised.value)
    await strict.aclose()
    await cache.aclose()


async def test_a_budget_spent_mid_answer_refuses_the_next_search_and_the_model_answers(
    redis_server: str, tiny_corpus: Path, tokenizer
) -> None:
    """The loop asks the budget before each search: the second of the model's searches finds it spent, is refused as
    a search past the request's own budget is (the model reads why), and the trace says so."""
    from sem.engines.replay import ReplayEngine
    from sem.loop import LoopOptions, SearchLoop, SearchPolicy

    backend = BM25Backend(tiny_corpus)
    await backend.load()
    engine = ReplayEngine(tokenizer, ["<search>Hamlet tragedy</search>", "<search>Shakespeare year</search>",
                                      "<answer>William Shakespeare</answer>"])  # fmt: skip
    budget = SearchBudget(settings(per_key={"minute": 1}), redis_server, clock=Clock())
    options = LoopOptions(policy=SearchPolicy.auto, max_searches=3, allowance=budget.allowance("key:mid"))
    trace = await SearchLoop(engine, CachedSearch(backend)).run("Who wrote Hamlet?", options)
    assert trace.search_count == 1 and trace.refused_searches == 1 and trace.search_budget_exhausted
    assert "the search budget is used up" in engine.contexts[-1] and trace.answer == "William Shakespeare"
    await budget.aclose()


def test_bad_budget_settings_name_the_setting() -> None:
    from pydantic import ValidationError

    for limits, said in (({"per_key": {"week": 3}}, "SEM_BUDGET__PER_KEY: unknown window 'week'"),
                         ({"deployment": {"day": -1}}, "SEM_BUDGET__DEPLOYMENT__DAY: -1 is negative"),
                         ({"keys": {"abc": {"day": 1}}}, "SEM_BUDGET__KEYS: 'abc' is not a key's sha256")):  # fmt: skip
        with pytest.raises(ValidationError, match=said):
            BudgetSettings(**limits)
