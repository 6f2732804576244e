"""Milvus: full-text (BM25), dense or hybrid search on an engine that shards and replicates.

The same code runs on Milvus Lite (the embedded engine of the `milvus-lite` package: `SEM_SEARCH__MILVUS_URI` is a local
`.db` file, the default) and on a Milvus cluster or Zilliz Cloud (`SEM_SEARCH__MILVUS_URI=http://host:19530`, token from
`SEM_SEARCH__MILVUS_TOKEN`). One collection per corpus:

- `text` is analysed (standard tokenizer, lowercase, English stop words and stemmer) and Milvus's built-in BM25
  function fills the sparse vector `sparse` (SPARSE_INVERTED_INDEX, metric BM25): no embedding model needed;
- with mode `dense` or `hybrid`, `dense` holds the same MiniLM embeddings as the `dense` backend, and `hybrid`
  fuses both result lists (RRF, or weighted).

The collection records the corpus sha256 and how far ingestion got: a restarted ingestion resumes after the last
finished batch, and a collection built from another corpus is refused with a clear error rather than served stale.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from tqdm import tqdm

from sem.corpus import corpus_hash, iter_passages
from sem.errors import ConfigError
from sem.search.base import LocalIndexBackend, Passage

if TYPE_CHECKING:
    from sem.settings import Settings

log = logging.getLogger(__name__)
Mode = Literal["bm25", "dense", "hybrid"]
MODES: tuple[Mode, ...] = ("bm25", "dense", "hybrid")
ANALYZER = {
    "tokenizer": "standard",
    "filter": ["lowercase", {"type": "stop", "stop_words": ["_english_"]}, {"type": "stemmer", "language": "english"}],
}
TEXT_BYTES = 65_535  # Milvus's VARCHAR limit
PROP_SHA, PROP_DONE, PROP_ROWS, PROP_DENSE = "sem.corpus_sha256", "sem.complete", "sem.ingested_rows", "sem.dense"


def collection_name(corpus_path: Path) -> str:
    """A valid Milvus collection name from the corpus file name.

    >>> collection_name(Path("/data/wiki-summaries-en.jsonl"))
    'sem_wiki_summaries_en'
    """
    stem = corpus_path.name.removesuffix(".jsonl")
    return "sem_" + re.sub(r"[^A-Za-z0-9_]+", "_", stem)[:200]


def _clip(text: str, limit: int = TEXT_BYTES) -> str:
    data = text.encode()
    return text if len(data) <= limit else data[:limit].decode(errors="ignore")


def _batches(it: Iterator[Passage], size: int) -> Iterator[list[Passage]]:
    while batch := list(islice(it, size)):
        yield batch


class MilvusBackend(LocalIndexBackend):
    name = "milvus"

    def __init__(
        self,
        corpus_path: Path,
        uri: str,
        *,
        token: str | None = None,
        collection: str | None = None,
        mode: Mode = "bm25",
        ranker: Literal["rrf", "weighted"] = "rrf",
        dense_weight: float = 0.5,
        embedding_model: str | None = None,
        batch_size: int = 1000,
    ) -> None:
        if mode not in MODES:
            raise ConfigError(f"unknown Milvus search mode {mode!r}; choose one of {list(MODES)}")
        self.corpus_path = corpus_path
        self.uri = uri
        self.token = token
        self.collection = collection or collection_name(corpus_path)
        self.mode: Mode = mode
        self.ranker = ranker
        self.dense_weight = dense_weight
        self.embedding_model = embedding_model
        self.batch_size = batch_size
        self.version = ""
        self._client: Any = None
        self._encoder: Any = None
        self._has_dense = False  # read from the collection at load

    @classmethod
    def from_corpus(cls, corpus: Path, settings: Settings) -> MilvusBackend:
        uri = settings.search.milvus_uri or str(settings.home_dir / "milvus" / "sem.db")
        return cls(
            corpus,
            uri,
            token=settings.search.milvus_token.get_secret_value() if settings.search.milvus_token else None,
            collection=settings.search.milvus_collection,
            mode=settings.search.milvus_mode,
            ranker=settings.search.milvus_ranker,
            embedding_model=settings.search.dense_model,
        )

    @property
    def is_lite(self) -> bool:
        return not self.uri.startswith(("http://", "https://", "tcp://", "unix:"))

    def load_sync(self) -> None:
        """Connect, ingest what is missing (resuming), load the collection and warm it up."""
        from pymilvus import MilvusClient

        if self.is_lite:
            Path(self.uri).expanduser().parent.mkdir(parents=True, exist_ok=True)
        try:
            self._client = MilvusClient(uri=self.uri, token=self.token or "")
        except Exception as exc:  # pymilvus raises its own types, and grpc's, for an unreachable server
            raise ConfigError(f"cannot connect to Milvus at {self.uri}: {exc}") from exc
        digest = corpus_hash(self.corpus_path)
        self.version = f"{self.mode}-{digest[:16]}"
        if self.mode != "bm25":
            self._encoder = self._load_encoder()
        props = self._properties()
        if props is None:
            self._create(digest)
            props = self._properties() or {}
        self._check(props, digest)
        self._has_dense = props.get(PROP_DENSE) == "true"
        if props.get(PROP_DONE) != "true":
            self.ingest(start=int(props.get(PROP_ROWS, 0)))
        started = time.perf_counter()
        self._client.load_collection(self.collection)
        # The first search after a load pays for warming the segments (about a second on Lite); pay it here.
        self.search_sync(["warm up"], 1)
        log.info("milvus: %s ready on %s (%s, warm-up %.2fs)", self.collection, self.uri, self.mode,
                 time.perf_counter() - started)  # fmt: skip

    def _load_encoder(self) -> Any:
        from sentence_transformers import SentenceTransformer

        from sem.search.dense import default_embedding_model

        return SentenceTransformer(self.embedding_model or default_embedding_model(), device="cpu")

    def _properties(self) -> dict[str, str] | None:
        if not self._client.has_collection(self.collection):
            return None
        return dict(self._client.describe_collection(self.collection).get("properties") or {})

    def _check(self, props: dict[str, str], digest: str) -> None:
        if props.get(PROP_SHA) != digest:
            raise ConfigError(
                f"the Milvus collection {self.collection!r} at {self.uri} was built from another corpus "
                f"(sha256 {str(props.get(PROP_SHA))[:16]}…, this corpus {digest[:16]}…): drop it, or set "
                "SEM_SEARCH__MILVUS_COLLECTION to another name"
            )
        if self.mode != "bm25" and props.get(PROP_DENSE) != "true":
            raise ConfigError(
                f"the Milvus collection {self.collection!r} has no dense vectors, so mode {self.mode!r} cannot "
                "run on it: drop it and ingest again with SEM_SEARCH__MILVUS_MODE=dense or hybrid"
            )

    def _create(self, digest: str) -> None:
        from pymilvus import DataType, Function, FunctionType

        client = self._client
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pid", DataType.VARCHAR, is_primary=True, max_length=1024)
        schema.add_field("title", DataType.VARCHAR, max_length=4096)
        schema.add_field("text", DataType.VARCHAR, max_length=TEXT_BYTES, enable_analyzer=True,
                         analyzer_params=ANALYZER)  # fmt: skip
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["text"],
                                     output_field_names=["sparse"]))  # fmt: skip
        index = client.prepare_index_params()
        index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        dense = self._encoder is not None
        if dense:
            dim = self._encoder.encode(["dimension"]).shape[1]  # the method's name changed across versions
            schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
            index.add_index(field_name="dense", index_type="AUTOINDEX", metric_type="COSINE")
        props = {PROP_SHA: digest, PROP_DONE: "false", PROP_ROWS: "0", PROP_DENSE: str(dense).lower()}
        client.create_collection(self.collection, schema=schema, index_params=index, properties=props)
        log.info("milvus: created collection %s on %s", self.collection, self.uri)

    def ingest(self, start: int = 0) -> int:
        """Upsert the corpus from row `start` on, batch by batch, recording progress after each batch."""
        total = sum(1 for _ in iter_passages(self.corpus_path))
        passages = islice(iter_passages(self.corpus_path), start, None)
        done, started = start, time.perf_counter()
        if start:
            log.info("milvus: resuming ingestion of %s at row %d of %d", self.collection, start, total)
        with tqdm(total=total, initial=start, desc=f"milvus {self.collection}", unit="passage") as bar:
            for batch in _batches(passages, self.batch_size):
                rows = [{"pid": p.id, "title": _clip(p.title, 4096), "text": _clip(f"{p.title}\n{p.text}")}
                        for p in batch]  # fmt: skip
                if self._encoder is not None:
                    vectors = self._encoder.encode([f"{p.title}. {p.text}" for p in batch], normalize_embeddings=True)
                    for row, vector in zip(rows, vectors, strict=True):
                        row["dense"] = vector.tolist()
                # upsert: a batch sent again after a crash replaces its rows instead of doubling them
                self._client.upsert(self.collection, rows)
                done += len(batch)
                self._client.alter_collection_properties(self.collection, properties={PROP_ROWS: str(done)})
                bar.update(len(batch))
        self._client.flush(self.collection)  # seal the segments: searching a growing segment is slow
        self._client.alter_collection_properties(self.collection, properties={PROP_DONE: "true"})
        seconds = time.perf_counter() - started
        log.info("milvus: ingested %d passages in %.1fs (%.0f/s)", done - start, seconds,
                 (done - start) / max(seconds, 1e-9))  # fmt: skip
        return done - start

    @property
    def modes(self) -> tuple[Mode, ...]:
        """This backend's mode first; the other two only when the collection holds dense vectors."""
        others = [m for m in MODES if m != self.mode] if self._has_dense else []
        return (self.mode, *others)

    @property
    def modes_hint(self) -> str:
        if self._has_dense:
            return ""
        return " (dense and hybrid need a collection ingested with SEM_SEARCH__MILVUS_MODE=dense or hybrid)"

    async def search(self, queries: list[str], k: int, *, mode: str | None = None) -> list[list[Passage]]:
        return await asyncio.to_thread(self.search_sync, queries, k, mode)  # type: ignore[arg-type]  # one of modes

    def search_sync(self, queries: list[str], k: int, mode: Mode | None = None) -> list[list[Passage]]:
        """One list per query, best first; `mode` overrides the backend's (bm25, dense, hybrid)."""
        if self._client is None:
            raise RuntimeError("MilvusBackend.load() has not been called")
        mode = mode or self.mode
        results: list[list[Passage]] = [[] for _ in queries]
        # A query without a word has no BM25 terms (and nothing to embed): it finds nothing.
        live = [i for i, q in enumerate(queries) if re.search(r"\w", q)]
        if k <= 0 or not live:
            return results
        texts = [queries[i] for i in live]
        fields = ["pid", "title", "text"]
        if mode == "bm25":
            hits = self._client.search(self.collection, data=texts, anns_field="sparse", limit=k, output_fields=fields,
                                       search_params={"metric_type": "BM25"}, consistency_level="Bounded")  # fmt: skip
        elif mode == "dense":
            hits = self._client.search(self.collection, data=self._embed(texts), anns_field="dense", limit=k,
                                       output_fields=fields, consistency_level="Bounded")  # fmt: skip
        else:
            hits = self._hybrid(texts, k, fields)
        for row, i in enumerate(live):
            results[i] = [self._passage(hit) for hit in hits[row]]
        return results

    def _embed(self, texts: list[str]) -> list[list[float]]:
        if self._encoder is None:
            self._encoder = self._load_encoder()
        return [v.tolist() for v in self._encoder.encode(texts, normalize_embeddings=True)]

    def _hybrid(self, texts: list[str], k: int, fields: list[str]) -> Any:
        from pymilvus import AnnSearchRequest, RRFRanker, WeightedRanker

        ranker = RRFRanker() if self.ranker == "rrf" else WeightedRanker(1 - self.dense_weight, self.dense_weight)
        hits = []
        for text, vector in zip(texts, self._embed(texts), strict=True):  # hybrid_search takes one query at a time
            requests = [
                AnnSearchRequest(data=[text], anns_field="sparse", param={"metric_type": "BM25"}, limit=k),
                AnnSearchRequest(data=[vector], anns_field="dense", param={"metric_type": "COSINE"}, limit=k),
            ]
            hits.append(self._client.hybrid_search(self.collection, requests, ranker, limit=k, output_fields=fields,
                                                   consistency_level="Bounded")[0])  # fmt: skip
        return hits

    @staticmethod
    def _passage(hit: dict[str, Any]) -> Passage:
        entity = hit.get("entity", {})
        title, text = entity.get("title", ""), entity.get("text", "")
        text = text.removeprefix(f"{title}\n") if title else text
        # Milvus Lite reports BM25 as a negative distance, a server as a positive score: higher is better either way.
        return Passage(id=str(entity["pid"]), title=title, text=text, score=abs(float(hit["distance"])))

    async def check_health(self) -> None:
        if self._client is None:
            raise RuntimeError("milvus backend not loaded")
        await asyncio.to_thread(self._client.get_load_state, self.collection)

    async def aclose(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
            self._client = None
