"""BM25 over a JSONL corpus with bm25s: the embedded default backend.

The index is stored beside the corpus (`<corpus>.bm25s/`), memory-mapped on load, and rebuilt only when the
corpus content hash changes.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sem.search.base import Passage, StoredIndexBackend

_HASH_FILE = "corpus.sha256"


class BM25Backend(StoredIndexBackend):
    modes: tuple[str, ...] = ()  # one way to search
    name = "bm25"

    def __init__(self, corpus_path: Path, index_dir: Path | None = None) -> None:
        self.corpus_path = corpus_path
        self.index_dir = index_dir or corpus_path.with_name(corpus_path.name + ".bm25s")
        self.version = ""
        self._passages: list[Passage] = []
        self._index: Any = None

    def _built_from(self) -> str | None:
        hash_file = self.index_dir / _HASH_FILE
        return hash_file.read_text().strip() if hash_file.is_file() else None

    def _open(self) -> None:
        import bm25s

        self._index = bm25s.BM25.load(str(self.index_dir), mmap=True)

    def _build(self, digest: str) -> None:
        import bm25s

        texts = [f"{p.title}\n{p.text}" if p.title else p.text for p in self._passages]
        tokens = bm25s.tokenize(texts, stopwords="en", show_progress=False)
        retriever = bm25s.BM25()
        retriever.index(tokens, show_progress=len(texts) > 50_000)
        if self.index_dir.exists():
            shutil.rmtree(self.index_dir)
        retriever.save(str(self.index_dir))
        (self.index_dir / _HASH_FILE).write_text(digest)
        self._open()

    def search_sync(self, queries: list[str], k: int) -> list[list[Passage]]:
        import bm25s

        index = self._loaded()
        k = min(k, len(self._passages))
        results: list[list[Passage]] = [[] for _ in queries]
        if k <= 0 or not queries:
            return results
        tokenized = bm25s.tokenize(queries, stopwords="en", show_progress=False, return_ids=False)
        # A query of only stop words has no tokens; bm25s cannot score it, so it finds nothing.
        live = [i for i, toks in enumerate(tokenized) if toks]
        if not live:
            return results
        docs, scores = index.retrieve([tokenized[i] for i in live], k=k, show_progress=False, n_threads=1)
        for row, i in enumerate(live):
            for doc, score in zip(docs[row], scores[row], strict=True):
                if score <= 0:  # no query term in the passage
                    continue
                results[i].append(self._passages[int(doc)].model_copy(update={"score": float(score)}))
        return results
