"""Scale-out on loopback: one vLLM OpenAI server (the model), two service replicas in `openai` engine mode (the
loop, search and cache), one Redis. Both answer, the cache is shared, and a replica killed mid-load does not stop
the other."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import free_port, launch, stop


@pytest.fixture(scope="module")
def replicas(vllm_server: str, redis_server: str, settings) -> Iterator[list[tuple[str, object]]]:
    started = []
    try:
        for i in range(2):
            port = free_port()
            env = {
                "SEM_HOME": str(settings.home_dir),
                "SEM_PORT": str(port),
                "SEM_ENGINE": "openai",
                "SEM_ENGINE_URL": vllm_server,
                "SEM_MODEL": settings.model_path,
                "SEM_REDIS_URL": redis_server,
            }
            url = f"http://127.0.0.1:{port}"
            started.append(
                (url, launch([sys.executable, "-m", "service"], env, f"remote-replica{i}.log", f"{url}/readyz"))
            )
        yield started
    finally:
        for _, proc in started:
            stop(proc)


def test_both_replicas_answer_and_share_the_cache(replicas) -> None:
    (a, _), (b, _) = replicas
    assert httpx.get(f"{a}/readyz").json()["engine"] == "openai"
    # A question no other test asks: the Redis server is shared by the whole session.
    question = {
        "question": "Which painter made the Mona Lisa, in the remote cluster?",
        "search": "always",
        "max_tokens": 24,
    }
    first = httpx.post(f"{a}/v1/answer", json=question, timeout=120).json()
    second = httpx.post(f"{b}/v1/answer", json=question, timeout=120).json()
    assert first["answer"] and second["answer"]
    assert first["searches"][0]["cached"] is False and second["searches"][0]["cached"] is True
    assert first["model"] == second["model"] == "smol"


def test_a_replica_killed_mid_load_leaves_the_other_answering(replicas) -> None:
    (a, _), (b, b_proc) = replicas

    async def load() -> tuple[list[int], list[str]]:
        async with httpx.AsyncClient(timeout=120) as client:

            async def ask(base: str, i: int) -> int | str:
                body = {"question": f"Tell me about the Moon, part {i}", "search": "never", "max_tokens": 24}
                try:
                    return (await client.post(f"{base}/v1/answer", json=body)).status_code
                except httpx.TransportError as exc:
                    return type(exc).__name__

            async def kill_b() -> None:
                await asyncio.sleep(1.0)
                b_proc.kill()  # no graceful shutdown: the process dies under load

            results = await asyncio.gather(*(ask(a, i) for i in range(8)), *(ask(b, i) for i in range(8)), kill_b())
        return list(results[:8]), list(results[8:16])

    from_a, from_b = asyncio.run(load())
    assert from_a == [200] * 8  # the surviving replica answered everything
    assert b_proc.poll() is not None and any(r != 200 for r in from_b)  # B died with requests in flight
    assert httpx.post(f"{a}/v1/answer", json={"question": "Still there?", "search": "never", "max_tokens": 8},
                      timeout=60).status_code == 200  # fmt: skip
