"""BM25 over a JSONL corpus with bm25s: the embedded default backend.

The index is stored beside the corpus (`<corpus>.bm25s/`), memory-mapped on load, and rebuilt only when the
corpus content hash changes.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sem.corpus import corpus_hash, load_corpus
from sem.search.base import LocalIndexBackend, Passage

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)
_HASH_FILE = "corpus.sha256"


class BM25Backend(LocalIndexBackend):
    modes: tuple[str, ...] = ()  # one way to search
    name = "bm25"

    def __init__(self, corpus_path: Path, index_dir: Path | None = None) -> None:
        self.corpus_path = corpus_path
        self.index_dir = index_dir or corpus_path.with_name(corpus_path.name + ".bm25s")
        self.version = ""
        self._passages: list[Passage] = []
        self._retriever: Any = None

    def load_sync(self) -> None:
        import bm25s

        self._passages = load_corpus(self.corpus_path)
        digest = corpus_hash(self.corpus_path)
        self.version = digest[:16]
        hash_file = self.index_dir / _HASH_FILE
        if hash_file.is_file() and hash_file.read_text().strip() == digest:
            self._retriever = bm25s.BM25.load(str(self.index_dir), mmap=True)
            log.info("bm25: opened index of %d passages at %s", len(self._passages), self.index_dir)
            return
        started = time.perf_counter()
        texts = [f"{p.title}\n{p.text}" if p.title else p.text for p in self._passages]
        tokens = bm25s.tokenize(texts, stopwords="en", show_progress=False)
        retriever = bm25s.BM25()
        retriever.index(tokens, show_progress=len(texts) > 50_000)
        if self.index_dir.exists():
            shutil.rmtree(self.index_dir)
        retriever.save(str(self.index_dir))
        hash_file.write_text(digest)
        self._retriever = bm25s.BM25.load(str(self.index_dir), mmap=True)
        log.info("bm25: indexed %d passages in %.1fs -> %s", len(texts), time.perf_counter() - started, self.index_dir)

    def __len__(self) -> int:
        return len(self._passages)

    async def search(self, queries: list[str], k: int, *, mode: str | None = None) -> list[list[Passage]]:
        return await asyncio.to_thread(self.search_sync, queries, k)

    def search_sync(self, queries: list[str], k: int) -> list[list[Passage]]:
        import bm25s

        if self._retriever is None:
            raise RuntimeError("BM25Backend.load() has not been called")
        k = min(k, len(self._passages))
        results: list[list[Passage]] = [[] for _ in queries]
        if k <= 0 or not queries:
            return results
        tokenized = bm25s.tokenize(queries, stopwords="en", show_progress=False, return_ids=False)
        # A query of only stop words has no tokens; bm25s cannot score it, so it finds nothing.
        live = [i for i, toks in enumerate(tokenized) if toks]
        if not live:
            return results
        docs, scores = self._retriever.retrieve([tokenized[i] for i in live], k=k, show_progress=False, n_threads=1)
        for row, i in enumerate(live):
            for doc, score in zip(docs[row], scores[row], strict=True):
                if score <= 0:  # no query term in the passage
                    continue
                results[i].append(self._passages[int(doc)].model_copy(update={"score": float(score)}))
        return results

    async def check_health(self) -> None:
        if self._retriever is None:
            raise RuntimeError("bm25 index not loaded")

    async def aclose(self) -> None:
        self._retriever = None
