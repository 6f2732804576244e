"""BM25 over a corpus the test writes: ranking, persisted index, rebuild on change, odd queries."""

from __future__ import annotations

import json
from pathlib import Path

from sem.search.bm25 import BM25Backend


async def test_finds_the_right_passage(tiny_corpus: Path) -> None:
    backend = BM25Backend(tiny_corpus)
    await backend.load()
    hamlet, paris = await backend.search(["who wrote the tragedy Hamlet", "capital of France"], 2)
    assert hamlet[0].id == "hamlet" and paris[0].id == "paris"
    assert hamlet[0].score is not None and hamlet[0].score > 0
    assert all(len(r) <= 2 for r in (hamlet, paris))


async def test_unicode_stopword_and_unknown_queries(tiny_corpus: Path) -> None:
    backend = BM25Backend(tiny_corpus)
    await backend.load()
    kyoto, stop_only, unknown, empty = await backend.search(["Kyōto capital Japan", "the of and", "xyzzy", ""], 3)
    assert kyoto[0].id == "kyoto"
    assert stop_only == [] and unknown == [] and empty == []


async def test_index_is_stored_and_rebuilt_when_the_corpus_changes(tiny_corpus: Path) -> None:
    first = BM25Backend(tiny_corpus)
    await first.load()
    assert (first.index_dir / "corpus.sha256").is_file()
    stamp = (first.index_dir / "corpus.sha256").stat().st_mtime_ns

    reopened = BM25Backend(tiny_corpus)
    await reopened.load()
    assert reopened.version == first.version
    assert (first.index_dir / "corpus.sha256").stat().st_mtime_ns == stamp  # opened, not rebuilt

    with tiny_corpus.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"id": "mars", "title": "Mars", "text": "Mars is the fourth planet from the Sun."}) + "\n")
    changed = BM25Backend(tiny_corpus)
    await changed.load()
    assert changed.version != first.version
    (mars,) = await changed.search(["fourth planet"], 1)
    assert mars[0].id == "mars"


async def test_default_corpus_answers_a_real_question(settings) -> None:
    backend = BM25Backend(settings.corpus_path)
    await backend.load()
    assert len(backend) > 10_000 - 100
    (found,) = await backend.search(["Who wrote Hamlet?"], 3)
    assert found[0].title == "Hamlet" and "Shakespeare" in found[0].text


def _load_and_search(corpus: str, start_at: float) -> str:
    import time

    time.sleep(max(0.0, start_at - time.time()))  # every process begins together, as ranks do
    backend = BM25Backend(Path(corpus))
    backend.load_sync()
    (found,) = backend.search_sync(["passage number 1234"], 1)
    return found[0].id


def test_processes_that_open_a_new_corpus_at_once_share_one_build(tmp_path: Path) -> None:
    """Training ranks open one corpus together: the first builds its index, the others wait and open it (before the
    lock, one rank deleted the folder another was writing)."""
    import multiprocessing
    import time
    from concurrent.futures import ProcessPoolExecutor

    corpus = tmp_path / "corpus.jsonl"
    with corpus.open("w", encoding="utf-8") as f:
        for i in range(20_000):
            f.write(json.dumps({"id": f"p{i}", "title": f"Passage {i}", "text": f"passage number {i} of many"}) + "\n")
    with ProcessPoolExecutor(6, mp_context=multiprocessing.get_context("spawn")) as pool:
        start_at = time.time() + 5  # past the pool's start-up
        found = list(pool.map(_load_and_search, [str(corpus)] * 6, [start_at] * 6))
    assert found == ["p1234"] * 6
