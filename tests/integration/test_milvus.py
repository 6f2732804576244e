"""The `milvus` backend on Milvus Lite (a local file, the same client code as a cluster): ingestion that resumes,
BM25 / dense / hybrid search, a collection from another corpus refused, an unreachable server, and the service
answering through it end to end."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest

from sem.cache import CachedSearch
from sem.errors import ConfigError, SearchModeError
from sem.search.milvus import PROP_DONE, PROP_ROWS, MilvusBackend
from tests.conftest import free_port, launch, stop

try:
    import milvus_lite  # noqa: F401
except ImportError:  # a failure that says what to install, never a skip
    pytest.fail("Milvus Lite is missing: install the `milvus` extra (`make install` does)", pytrace=False)


def open_backend(corpus: Path, db: Path | str, **kwargs) -> MilvusBackend:
    backend = MilvusBackend(corpus, str(db), **kwargs)
    backend.load_sync()
    return backend


def test_bm25_on_lite_finds_and_versions(tiny_corpus: Path, tmp_path: Path) -> None:
    backend = open_backend(tiny_corpus, tmp_path / "m.db")
    try:
        hamlet, empty, paris = backend.search_sync(["Who wrote Hamlet?", "?!", "capital of France"], 3)
        assert hamlet[0].id == "hamlet" and hamlet[0].title == "Hamlet" and hamlet[0].score > 0
        assert hamlet[0].text.startswith("Hamlet is a tragedy")  # the title is indexed, not returned twice
        assert empty == [] and paris[0].id == "paris"
        assert backend.version.startswith("bm25-") and len(backend.version) == len("bm25-") + 16
        assert len(backend.search_sync(["capital"], 10)[0]) == 2  # Paris and Kyōto, nothing without the term
    finally:
        backend._client.close()


def test_ingestion_resumes_after_a_crash(tiny_corpus: Path, tmp_path: Path) -> None:
    db = tmp_path / "m.db"

    class CrashingAfterOneBatch(MilvusBackend):
        calls = 0

        def ingest(self, start: int = 0) -> int:
            real_upsert = self._client.upsert

            def upsert(*args, **kwargs):  # a process killed mid-ingestion, after its first batch
                type(self).calls += 1
                if type(self).calls > 1:
                    raise KeyboardInterrupt
                return real_upsert(*args, **kwargs)

            self._client.upsert = upsert
            return super().ingest(start)

    crashing = CrashingAfterOneBatch(tiny_corpus, str(db), batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        crashing.load_sync()
    props = crashing._properties()
    assert props[PROP_ROWS] == "2" and props[PROP_DONE] == "false"
    crashing._client.close()

    resumed = MilvusBackend(tiny_corpus, str(db), batch_size=2)
    resumed.load_sync()
    try:
        props = resumed._properties()
        assert props[PROP_DONE] == "true" and props[PROP_ROWS] == "5"
        count = resumed._client.query(resumed.collection, filter="", output_fields=["count(*)"])[0]["count(*)"]
        assert count == 5  # upserts: no row twice
        assert resumed.search_sync(["natural satellite"], 1)[0][0].id == "moon"
    finally:
        resumed._client.close()


def test_a_collection_from_another_corpus_is_refused(tiny_corpus: Path, tmp_path: Path) -> None:
    db = tmp_path / "m.db"
    open_backend(tiny_corpus, db)._client.close()
    other = tmp_path / "corpus.jsonl"  # the same file name, so the same collection, but other content
    other.write_text(tiny_corpus.read_text() + json.dumps({"id": "x", "title": "X", "text": "new"}) + "\n")
    with pytest.raises(ConfigError, match="built from another corpus"):
        open_backend(other, db)


def test_unreachable_server_is_a_clear_error(tiny_corpus: Path) -> None:
    with pytest.raises(ConfigError, match="cannot connect to Milvus"):
        # a str: Path would fold "http://" into "http:/", a local file (and a folder "http:" in the working tree)
        open_backend(tiny_corpus, f"http://127.0.0.1:{free_port()}")


def test_dense_and_hybrid(tiny_corpus: Path, tmp_path: Path) -> None:
    backend = open_backend(tiny_corpus, tmp_path / "m.db", mode="hybrid")
    try:
        # no word of the query is in the passage: only the dense half can find it
        assert backend.search_sync(["the satellite orbiting our planet"], 1, mode="dense")[0][0].id == "moon"
        hybrid = backend.search_sync(["Shakespeare play", "Japanese old capital"], 2)
        assert hybrid[0][0].id == "hamlet" and hybrid[1][0].id == "kyoto"
        assert backend.search_sync(["Shakespeare"], 1, mode="bm25")[0][0].id == "hamlet"
    finally:
        backend._client.close()
    with pytest.raises(ConfigError, match="no dense vectors"):
        open_backend(tiny_corpus, tmp_path / "bm25-only.db")._client.close()
        open_backend(tiny_corpus, tmp_path / "bm25-only.db", mode="dense")


async def test_search_mode_per_request_is_searched_and_cached_apart(tiny_corpus: Path, tmp_path: Path) -> None:
    backend = open_backend(tiny_corpus, tmp_path / "m.db", mode="hybrid")
    assert backend.modes == ("hybrid", "bm25", "dense")
    search = CachedSearch(backend)
    try:
        query = "the satellite orbiting our planet"
        (default,) = await search.retrieve([query], 2)
        (explicit,) = await search.retrieve([query], 2, "hybrid")  # the default mode shares the default's key
        (dense,) = await search.retrieve([query], 2, "dense")
        (again,) = await search.retrieve([query], 2, "dense")
        (bm25,) = await search.retrieve([query], 2, "bm25")
        assert not default.cached and explicit.cached
        assert not dense.cached and again.cached and not bm25.cached  # each mode has its own cache entries
        assert dense.passages[0].id == "moon" and search.stats.backend_calls == 3
        with pytest.raises(SearchModeError, match=r"offers \['hybrid', 'bm25', 'dense'\]"):
            await search.retrieve([query], 2, "sparse")
    finally:
        backend._client.close()
    bm25_only = open_backend(tiny_corpus, tmp_path / "bm25.db")
    assert bm25_only.modes == ("bm25",)  # no vectors in that collection: no dense or hybrid per request
    bm25_only._client.close()


def test_finds_supporting_paragraphs_of_real_questions(tmp_path: Path) -> None:
    from sem.corpus import write_corpus
    from sem.evaldata import benchmarks

    questions = benchmarks.load_source("hotpotqa", "sample", "dev", limit=40)
    corpus = tmp_path / "hotpot.jsonl"
    write_corpus(benchmarks.paragraph_corpus(questions), corpus)
    backend = open_backend(corpus, tmp_path / "m.db")
    try:
        found = backend.search_sync([q.question for q in questions], 5)
    finally:
        backend._client.close()
    hits = sum(
        any(p.title in {s.title for s in q.paragraphs if s.supporting} for p in top)
        for q, top in zip(questions, found, strict=True)
    )
    assert hits / len(questions) >= 0.6, f"{hits}/{len(questions)}"


def test_service_answers_through_milvus(tiny_corpus: Path, tmp_path: Path, settings) -> None:
    port = free_port()
    env = {"SEM_SEARCH__BACKEND": "milvus", "SEM_SEARCH__MILVUS_MODE": "hybrid", "SEM_CORPUS": str(tiny_corpus),
           "SEM_SEARCH__MILVUS_URI": str(tmp_path / "s.db"), "SEM_PORT": str(port),
           "SEM_HOME": str(settings.home_dir)}  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    proc = launch([sys.executable, "-m", "service"], env, "service-milvus.log", f"{base}/readyz")
    try:
        assert httpx.get(f"{base}/readyz").json()["search_backend"] == "milvus"
        body = {"question": "Who wrote the tragedy Hamlet?", "search": "always", "max_tokens": 48}
        reply = httpx.post(f"{base}/v1/answer", json=body, timeout=120).json()
        assert reply["search_count"] == 1 and not reply["search_errors"]
        assert reply["searches"][0]["passages"][0]["id"] == "hamlet"
        # the same search in another mode, per request: searched again (its own cache entry), same top passage
        reply = httpx.post(f"{base}/v1/answer", json={**body, "search_mode": "bm25"}, timeout=120).json()
        assert reply["searches"][0]["passages"][0]["id"] == "hamlet" and not reply["searches"][0]["cached"]
        model = httpx.get(f"{base}/v1/models").json()["data"][0]["id"]
        chat = {"model": model, "messages": [{"role": "user", "content": "Who wrote the tragedy Hamlet?"}],
                "max_tokens": 48, "sem": {"search": "always", "search_mode": "dense"}}  # fmt: skip
        completion = httpx.post(f"{base}/v1/chat/completions", json=chat, timeout=120).json()
        assert completion["search_results"][0]["passages"][0]["id"] == "hamlet"
        wrong = httpx.post(f"{base}/v1/answer", json={**body, "search_mode": "sparse"})
        assert wrong.status_code == 400 and "offers ['hybrid', 'bm25', 'dense']" in wrong.json()["error"]["message"]
    finally:
        stop(proc)
