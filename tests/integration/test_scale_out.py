"""Processes as they would run apart: `sem-retrieve` serving an index, two service replicas (the transformers
engine, to start fast) using it through the `retriever` backend and sharing one Redis cache."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import free_port, launch, stop


@pytest.fixture(scope="module")
def cluster(redis_server: str, settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    import json

    corpus = tmp_path_factory.mktemp("scale") / "corpus.jsonl"
    rows = [
        {"id": "hamlet", "title": "Hamlet", "text": "Hamlet is a tragedy written by William Shakespeare."},
        {"id": "paris", "title": "Paris", "text": "Paris is the capital of France."},
    ]
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    home = {"SEM_HOME": str(settings.home_dir)}
    retrieve_port = free_port()
    retrieve = [sys.executable, "-m", "service.retrieve", "--port", str(retrieve_port), "--backend", "bm25"]
    procs = [launch(retrieve, {**home, "SEM_CORPUS": str(corpus)}, "retrieve.log",
                    f"http://127.0.0.1:{retrieve_port}/healthz", 120)]  # fmt: skip
    urls = []
    try:
        for i in range(2):
            port = free_port()
            env = {
                **home,
                "SEM_PORT": str(port),
                "SEM_ENGINE": "hf",
                "SEM_SEARCH__BACKEND": "retriever",
                "SEM_SEARCH__RETRIEVER_URL": f"http://127.0.0.1:{retrieve_port}",
                "SEM_REDIS_URL": redis_server,
            }
            url = f"http://127.0.0.1:{port}"
            procs.append(launch([sys.executable, "-m", "service"], env, f"replica{i}.log", f"{url}/readyz", 120))
            urls.append(url)
        yield {"replicas": urls, "retrieve": procs[0]}
    finally:
        for proc in procs:
            stop(proc)


def test_replicas_search_through_sem_retrieve_and_share_the_cache(cluster: dict) -> None:
    first, second = cluster["replicas"]
    question = {"question": "Who wrote the tragedy Hamlet?", "search": "always", "max_tokens": 24}
    a = httpx.post(f"{first}/v1/answer", json=question, timeout=120).json()
    assert httpx.get(f"{first}/readyz").json()["search_backend"] == "retriever"
    assert a["searches"][0]["passages"][0]["id"] == "hamlet" and a["searches"][0]["cached"] is False
    b = httpx.post(f"{second}/v1/answer", json=question, timeout=120).json()
    assert b["searches"][0]["cached"] is True  # the other replica's search, from the shared Redis
    assert b["searches"][0]["passages"] == a["searches"][0]["passages"]


def test_the_index_going_away_degrades_answers(cluster: dict) -> None:
    # A question nobody asked yet, so the cache cannot hide the outage, with the index server stopped.
    cluster["retrieve"].terminate()
    cluster["retrieve"].wait(timeout=30)
    body = httpx.post(
        f"{cluster['replicas'][0]}/v1/answer", json={"question": "What is the capital of France?", "search": "always",
                                         "max_tokens": 16}, timeout=120,
    )  # fmt: skip
    assert body.status_code == 200
    data = body.json()
    assert data["search_count"] == 1 and data["searches"][0]["passages"] == []
    assert data["search_errors"] and "retriever" in data["search_errors"][0]
