"""Every search backend on a corpus the test writes and on real HotpotQA paragraphs (the shipped sample);
`retriever` against our own `sem-retrieve` on 127.0.0.1; plugin discovery through a real entry point; corpus
building."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sem.search import build_backend
from sem.search.bm25 import BM25Backend
from sem.search.dense import DenseBackend
from sem.search.registry import available_backends, load_backend_class
from sem.search.remote import RetrieverBackend
from sem.search.web import SearxngBackend
from sem.settings import SearchSettings, Settings
from service.retrieve import create_retrieve_app
from tests.conftest import free_port, serve_in_thread


@pytest.fixture(scope="module")
def dense_model() -> str:
    from sem.search.dense import default_embedding_model

    return default_embedding_model()


async def test_dense_finds_by_meaning_and_stores_its_index(tiny_corpus: Path, dense_model: str) -> None:
    backend = DenseBackend(tiny_corpus, dense_model)
    await backend.load()
    satellite, play = await backend.search(["What orbits our planet?", "a Shakespeare drama"], 2)
    assert satellite[0].id == "moon" and play[0].id == "hamlet"
    assert (backend.index_dir / "index.faiss").is_file()
    again = DenseBackend(tiny_corpus, dense_model)
    await again.load()
    assert again.version == backend.version
    with tiny_corpus.open("a") as f:
        f.write(json.dumps({"id": "mars", "title": "Mars", "text": "Mars is the red planet."}) + "\n")
    changed = DenseBackend(tiny_corpus, dense_model)
    await changed.load()
    assert changed.version != backend.version and len(changed) == len(backend) + 1


async def test_backends_find_supporting_paragraphs_of_real_questions(tmp_path: Path, dense_model: str) -> None:
    from sem.corpus import write_corpus
    from sem.evaldata import benchmarks

    questions = benchmarks.load_source("hotpotqa", "sample", "dev", limit=40)
    corpus = tmp_path / "hotpot.jsonl"
    write_corpus(benchmarks.paragraph_corpus(questions), corpus)
    for backend in (BM25Backend(corpus), DenseBackend(corpus, dense_model)):
        await backend.load()
        found = await backend.search([q.question for q in questions], 5)
        hits = sum(
            any(p.title in {s.title for s in q.paragraphs if s.supporting} for p in top)
            for q, top in zip(questions, found, strict=True)
        )
        assert hits / len(questions) >= 0.6, f"{backend.name}: {hits}/{len(questions)}"


@pytest.fixture
def retrieve_server(tiny_corpus: Path) -> Iterator[str]:
    port = free_port()
    server = serve_in_thread(
        create_retrieve_app(Settings(corpus=tiny_corpus, search=SearchSettings(backend="bm25"))), port
    )
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True


async def test_retriever_against_sem_retrieve(retrieve_server: str, tiny_corpus: Path) -> None:
    remote = await RetrieverBackend.from_settings(
        Settings(search=SearchSettings(backend="retriever", retriever_url=retrieve_server))
    )
    local = BM25Backend(tiny_corpus)
    await local.load()
    assert remote.version == f"bm25-{local.version}"  # the server's index versions our cache keys
    got = await remote.search(["who wrote Hamlet", "capital of France"], 2)
    want = await local.search(["who wrote Hamlet", "capital of France"], 2)
    assert [[(p.id, p.title, p.text) for p in r] for r in got] == [[(p.id, p.title, p.text) for p in r] for r in want]
    assert got[0][0].score == pytest.approx(want[0][0].score)
    await remote.aclose()


async def test_retriever_errors_are_search_errors() -> None:
    from sem.errors import SearchError

    dead = RetrieverBackend(f"http://127.0.0.1:{free_port()}", timeout_s=1)
    with pytest.raises(SearchError, match="retriever"):
        await dead.search(["q"], 1)
    await dead.aclose()


class FakeSearxng:
    """Stands in for a SearXNG instance (its JSON API), which cannot run on this machine."""

    async def __call__(self, scope, receive, send) -> None:
        from urllib.parse import parse_qs

        query = parse_qs(scope["query_string"].decode()).get("q", [""])[0]
        results = [
            {"url": f"https://example.org/{i}", "title": f"{query} {i}", "content": f"About {query}, part {i}.",
             "score": 1.0 / (i + 1)}
            for i in range(5)
        ] + [{"url": "https://example.org/empty", "title": "no snippet", "content": ""}]  # fmt: skip
        body = json.dumps({"query": query, "results": results}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


async def test_searxng_backend() -> None:
    port = free_port()
    server = serve_in_thread(FakeSearxng(), port)
    try:
        backend = await SearxngBackend.from_settings(
            Settings(search=SearchSettings(backend="searxng", searxng_url=f"http://127.0.0.1:{port}"))
        )
        moon, mars = await backend.search(["moon", "mars"], 3)
        assert [p.text for p in moon] == ["About moon, part 0.", "About moon, part 1.", "About moon, part 2."]
        assert mars[0].id == "https://example.org/0" and mars[0].title == "mars 0"
        await backend.aclose()
    finally:
        server.should_exit = True


def test_missing_urls_are_config_errors() -> None:
    import asyncio

    from sem.errors import ConfigError

    for name in ("retriever", "searxng"):
        with pytest.raises(ConfigError, match="SEM_"):
            asyncio.run(build_backend(Settings(search=SearchSettings(backend=name))))


def test_a_third_party_backend_is_found_through_its_entry_point(tmp_path: Path, tiny_corpus: Path) -> None:
    (tmp_path / "echo_backend.py").write_text(
        "from sem.search.base import Passage\n"
        "class EchoBackend:\n"
        "    name = 'echo'\n"
        "    version = '1'\n"
        "    @classmethod\n"
        "    async def from_settings(cls, settings):\n"
        "        return cls()\n"
        "    async def search(self, queries, k):\n"
        "        return [[Passage(id=q, text=q)] for q in queries]\n"
        "    async def check_health(self): ...\n"
        "    async def aclose(self): ...\n"
    )
    dist = tmp_path / "echo_backend-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-backend\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[sem.search_backends]\necho = echo_backend:EchoBackend\n")
    sys.path.insert(0, str(tmp_path))
    available_backends.cache_clear()
    try:
        assert available_backends()["echo"] == "echo_backend:EchoBackend"
        import asyncio

        backend = asyncio.run(build_backend(Settings(search=SearchSettings(backend="echo"))))
        assert asyncio.run(backend.search(["hello"], 1))[0][0].text == "hello"
        assert load_backend_class("echo").__name__ == "EchoBackend"
    finally:
        sys.path.remove(str(tmp_path))
        available_backends.cache_clear()


def test_corpus_build_from_folder_and_jsonl(tmp_path: Path) -> None:
    from sem.cli import app
    from sem.corpus import load_corpus

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "long_note.txt").write_text(" ".join(f"w{i}" for i in range(450)))
    (docs / "short.md").write_text("A short note about the Moon.")
    runner = CliRunner()
    out = tmp_path / "folder.jsonl"
    result = runner.invoke(app, ["corpus", "build", "folder", "--input", str(docs), "--out", str(out),
                                 "--words", "200", "--overlap", "50"])  # fmt: skip
    assert result.exit_code == 0, result.output
    passages = load_corpus(out)
    assert [p.id for p in passages] == ["long_note.txt#0", "long_note.txt#1", "long_note.txt#2", "short.md#0"]
    assert passages[1].text.split()[0] == "w150"  # 50 words of overlap
    assert (tmp_path / "folder.jsonl.bm25s").is_dir()
    bad = runner.invoke(app, ["corpus", "build", "jsonl", "--out", str(tmp_path / "x.jsonl")])
    assert bad.exit_code != 0 and "--input" in bad.output


def provider_payload(provider: str, n: int = 4) -> dict:
    """Each provider's own answer shape (fields as their API documents them), so a parser that reads another
    provider's field (Brave reading Serper's `snippet`) finds nothing and fails the test."""
    if provider == "tavily":  # POST /search -> {"results": [{url, title, content, score}]}
        return {"query": "q", "results": [{"url": f"https://example.org/{i}", "title": f"t{i}", "content": f"c{i}",
                                           "score": 1 - i / 10, "raw_content": None} for i in range(n)]}  # fmt: skip
    if provider == "brave":  # GET /res/v1/web/search -> {"web": {"results": [{url, title, description}]}}
        return {"type": "search", "web": {"type": "search", "results": [
            {"url": f"https://example.org/{i}", "title": f"t{i}", "description": f"c{i}", "age": "1 day"}
            for i in range(n)]}}  # fmt: skip
    assert provider == "serper"  # POST /search -> {"organic": [{title, link, snippet, position}]}
    return {"searchParameters": {"q": "q"}, "organic": [
        {"title": f"t{i}", "link": f"https://example.org/{i}", "snippet": f"c{i}", "position": i + 1}
        for i in range(n)]}  # fmt: skip


class FakeWebAPIs:
    """Stands in for Tavily, Brave and Serper (keyed web APIs unreachable here); checks the key arrives."""

    def __init__(self) -> None:
        self.keys: list[str] = []

    async def __call__(self, scope, receive, send) -> None:
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.keys.append(
            headers.get("authorization") or headers.get("x-subscription-token") or headers.get("x-api-key")
        )
        status = 401 if headers.get("x-api-key") == "wrong" else 200
        payload = json.dumps(provider_payload(scope["path"].strip("/"))).encode()
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
        )
        await send({"type": "http.response.body", "body": payload})


def test_each_web_parser_reads_only_its_own_providers_payload() -> None:
    from sem.search.web import BraveBackend, SerperBackend, TavilyBackend

    parsers = {"tavily": TavilyBackend("k"), "brave": BraveBackend("k"), "serper": SerperBackend("k")}
    for name, backend in parsers.items():
        own = backend.parse(provider_payload(name), 2)
        assert [(p.id, p.title, p.text) for p in own] == [("https://example.org/0", "t0", "c0"),
                                                          ("https://example.org/1", "t1", "c1")]  # fmt: skip
        for other in set(parsers) - {name}:
            assert backend.parse(provider_payload(other), 2) == [], (name, other)


async def test_keyed_web_backends_send_the_key_and_never_show_it() -> None:
    from sem.errors import SearchError

    app = FakeWebAPIs()
    port = free_port()
    server = serve_in_thread(app, port)
    try:
        for name, header in (("tavily", "Bearer s3cret"), ("brave", "s3cret"), ("serper", "s3cret")):
            search = SearchSettings(backend=name, web_api_key="s3cret", web_api_url=f"http://127.0.0.1:{port}/{name}")
            settings = Settings(search=search)
            backend = await build_backend(settings)
            (found,) = await backend.search(["moon"], 2)
            assert [p.text for p in found] == ["c0", "c1"] and found[0].id == "https://example.org/0"
            assert app.keys[-1] == header
            assert "s3cret" not in repr(backend) and "s3cret" not in repr(settings)
            await backend.aclose()
        search = SearchSettings(backend="serper", web_api_key="wrong", web_api_url=f"http://127.0.0.1:{port}/serper")
        wrong = await build_backend(Settings(search=search))
        with pytest.raises(SearchError) as info:
            await wrong.search(["moon"], 1)
        assert "401" in str(info.value) and "wrong" not in str(info.value)
        await wrong.aclose()
    finally:
        server.should_exit = True


class RecordingWebAPI:
    """A web API stand-in that records what it was asked and answers with mixed domains, whatever the filter (as a
    provider that ignores one would)."""

    def __init__(self) -> None:
        self.asked: list[dict] = []

    async def __call__(self, scope, receive, send) -> None:
        body = json.loads((await receive()).get("body") or b"{}")
        self.asked.append({"path": scope["path"], "query": scope["query_string"].decode(), "body": body})
        urls = [
            "https://spam.example.com/a",
            "https://docs.example.com/b",
            "https://other.net/c",
            "https://example.com/d",
        ]
        results = [{"url": u, "title": u, "content": "c", "description": "c"} for u in urls]
        payload = {"results": results, "web": {"results": results}}
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps(payload).encode()})


async def test_source_filters_reach_tavily_natively_and_every_backend_is_filtered_after() -> None:
    from sem.cache import CachedSearch
    from sem.domains import DomainFilter
    from sem.search import guards

    app, port = RecordingWebAPI(), free_port()
    server = serve_in_thread(app, port)
    only = DomainFilter.of(allow=["example.com"], block=["spam.example.com"])
    try:
        # Tavily is asked for 2 (it filters itself) and this one ignored the filter: its spam is dropped all the same;
        # Brave is asked for 3x 2 and filtered here, so 2 are left.
        for name, kept in (("tavily", ["https://docs.example.com/b"]),
                           ("brave", ["https://docs.example.com/b", "https://example.com/d"])):  # fmt: skip
            search = SearchSettings(backend=name, web_api_key="k", web_api_url=f"http://127.0.0.1:{port}/{name}")
            cache = CachedSearch(await build_backend(Settings(search=search)))
            (found,) = await guards.retrieve(cache, [f"moon {name}"], 2, domains=only)
            assert [p.id for p in found.passages] == kept and found.dropped >= 1
            assert not any("spam" in p.id or "other.net" in p.id for p in found.passages)
            await cache.aclose()
        tavily, brave = app.asked
        assert tavily["body"]["include_domains"] == ["example.com"] and tavily["body"]["max_results"] == 2
        assert tavily["body"]["exclude_domains"] == ["spam.example.com"]
        assert "count=6" in brave["query"]  # no native filter: asked for 3x, filtered here
    finally:
        server.should_exit = True
