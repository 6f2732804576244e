"""Scale-out on loopback: one vLLM OpenAI server (the model), two service replicas in `openai` engine mode (the
loop, search and cache), one Redis. Both answer, the cache is shared, and a replica killed mid-load does not stop
the other (a third replica, whose answers wait at their search until it is killed: in flight by construction)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import FaultyRetriever, free_port, held_search, launch, serve_in_thread, stop, wait_for


def start_replica(name: str, vllm_server: str, redis_server: str, settings, **env: str) -> tuple[str, object]:
    port = free_port()
    env = {
        "SEM_HOME": str(settings.home_dir),
        "SEM_PORT": str(port),
        "SEM_ENGINE": "openai",
        "SEM_ENGINE_URL": vllm_server,
        "SEM_MODEL": settings.model_path,
        "SEM_REDIS_URL": redis_server,
        **env,
    }
    url = f"http://127.0.0.1:{port}"
    return url, launch([sys.executable, "-m", "service"], env, f"{name}.log", f"{url}/readyz")


@pytest.fixture(scope="module")
def replicas(vllm_server: str, redis_server: str, settings) -> Iterator[list[tuple[str, object]]]:
    started = []
    try:
        for i in range(2):
            started.append(start_replica(f"remote-replica{i}", vllm_server, redis_server, settings))
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


def test_a_replica_killed_mid_load_leaves_the_other_answering(replicas, vllm_server, redis_server, settings) -> None:
    (a, _), _ = replicas
    holding, port = FaultyRetriever("hold"), free_port()
    retriever = serve_in_thread(holding, port)
    doomed_url, doomed = start_replica("remote-replica-doomed", vllm_server, redis_server, settings,
                                       **held_search(f"http://127.0.0.1:{port}"))  # fmt: skip
    from_a: dict[int, httpx.Response] = {}
    from_doomed: dict[int, str] = {}

    def ask_a(i: int) -> None:
        body = {"question": f"Tell me about the Moon, part {i}", "search": "never", "max_tokens": 24}
        from_a[i] = httpx.post(f"{a}/v1/answer", json=body, timeout=300)

    def ask_doomed(i: int) -> None:
        body = {"question": f"Tell me about the Moon, doomed part {i}", "search": "always", "max_tokens": 24}
        try:
            from_doomed[i] = str(httpx.post(f"{doomed_url}/v1/answer", json=body, timeout=300).status_code)
        except httpx.TransportError as exc:
            from_doomed[i] = type(exc).__name__

    try:
        threads = [threading.Thread(target=ask_a, args=(i,)) for i in range(8)]
        threads += [threading.Thread(target=ask_doomed, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        wait_for(lambda: holding.held == 8, "the doomed replica's answers did not all reach their search")
        doomed.kill()  # no graceful shutdown: the process dies with its 8 answers in flight
        for t in threads:
            t.join(timeout=300)
            assert not t.is_alive(), "a client never got an answer"
    finally:
        holding.release()
        retriever.should_exit = True
        stop(doomed)
    assert doomed.poll() is not None
    assert sorted(from_doomed) == list(range(8)) and not any(r.isdigit() for r in from_doomed.values()), from_doomed
    # the surviving replica answered everything, each an answer of its own, without searching (search: never)
    assert sorted(from_a) == list(range(8)) and all(r.status_code == 200 for r in from_a.values()), from_a
    answers = [from_a[i].json() for i in range(8)]
    assert all(x["model"] == "smol" and x["usage"]["completion_tokens"] > 0 for x in answers), answers
    assert all(x["search_count"] == 0 and x["searches"] == [] for x in answers), answers
    assert len({x["id"] for x in answers}) == 8
    again = httpx.post(f"{a}/v1/answer", json={"question": "Still there?", "search": "never", "max_tokens": 8},
                       timeout=300)  # fmt: skip
    assert again.status_code == 200 and again.json()["usage"]["completion_tokens"] > 0, again.text
