"""What every trainer command builds the same way: the model to start from, a model the engines can load (adapters
merged), the search the loop runs, and a SearchLoop on a local engine. No module state: the search backend comes
from the settings (SEM_SEARCH__BACKEND, which `trainer --search-backend` sets)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from trainer.evals.ledger import MERGED_PREFIX  # servable's temporary folder, which the ledger refuses as a name

RUNS = Path("runs")
LABELS = RUNS / "labels" / "labels.jsonl"
# How a model labels its own questions (trainer.evals.labels.label), for both commands that ask it to (`trainer label`,
# `trainer data --labelling model`): samples per question and policy, their temperature and length, answers in flight
LABEL_SAMPLES, LABEL_TEMPERATURE, LABEL_MAX_TOKENS, LABEL_CONCURRENCY = 4, 0.8, 64, 16


def retriever(corpus: Path):
    """The search the trainer's loop runs, built by the service's factory: the backend SEM_SEARCH__BACKEND (set by
    `trainer --search-backend`) names, over `corpus` for the local indexes, behind an in-process cache."""
    from concurrent.futures import ThreadPoolExecutor

    from sem.cache import CachedSearch
    from sem.search import build_backend
    from sem.settings import Settings

    settings = Settings(corpus=corpus)
    with ThreadPoolExecutor(1) as pool:  # its own event loop: callers may already run one
        backend = pool.submit(asyncio.run, build_backend(settings)).result()
    return CachedSearch(backend)


def default_model() -> str:
    """What training starts from: SEM_MODEL, else the embedded base (never the already tuned default)."""
    from sem.assets import base_model_dir
    from sem.settings import Settings

    settings = Settings()
    return settings.model_path if settings.model else str(base_model_dir(settings.home_dir))


@contextmanager
def servable(model: str | None) -> Iterator[str | None]:
    """A model the engines can load: a LoRA adapter is merged into its base in a temporary folder first."""
    from trainer.train.lora import is_adapter

    if model == "base":  # the embedded base checkpoint, before SEM's adapter
        from sem.assets import base_model_dir
        from sem.settings import Settings

        model = str(base_model_dir(Settings().home_dir))
    if model is None or not is_adapter(model):
        yield model
        return
    from trainer.train.lora import merge_adapter

    with tempfile.TemporaryDirectory(prefix=MERGED_PREFIX) as tmp:
        yield str(merge_adapter(Path(model), Path(tmp)))


def gate_corpus(examples: list, out: Path) -> Path:
    """The questions' own paragraphs plus the default Wikipedia summaries: what the labelling searches."""
    from sem.corpus import iter_passages, write_corpus
    from sem.settings import Settings
    from trainer.data import paragraph_corpus

    rows = paragraph_corpus(examples) + [p.model_dump() for p in iter_passages(Settings().corpus_path)]
    write_corpus(rows, out)
    return out


def passage_ids(example) -> set[str]:
    """The corpus ids of what a question brings: its own paragraphs, and a world question's entity passage
    (`world:<entity>`, asked as `world:<relation>:<entity>`)."""
    from sem.evaldata.benchmarks import paragraph_corpus

    ids = {row["id"] for row in paragraph_corpus([example])}
    if example.id.startswith("world:") and example.id.count(":") >= 2:
        ids.add("world:" + example.id.split(":", 2)[2])
    return ids


def training_corpus(corpus: Path, held: Iterable, kept: Iterable, out: Path) -> Path:
    """`corpus` less the passages only the `held` questions (the test split's) bring, none the `kept` ones also
    bring, written to `out`: what gate training (SFT, GRPO, decide) searches, so that it never reads a test passage."""
    import json
    import logging

    dropped = set().union(*map(passage_ids, held)) - set().union(*map(passage_ids, kept))
    out.parent.mkdir(parents=True, exist_ok=True)
    left = 0
    with corpus.open() as src, out.open("w") as dst:
        for line in src:
            if line.strip() and json.loads(line)["id"] not in dropped:
                dst.write(line)
                left += 1
    logging.getLogger(__name__).info("training corpus: %d passages, %d test passages left out", left, len(dropped))
    return out


def labels_training_corpus(labels_file: Path, out: Path) -> Path:
    """`training_corpus` of the labels' corpus: their test questions' passages left out."""
    from trainer.evals.labels import read_labels

    labels = read_labels(labels_file)
    held = [lab.example for lab in labels if lab.split == "test"]
    kept = [lab.example for lab in labels if lab.split != "test"]
    return training_corpus(labels_corpus(labels_file), held, kept, out)


def labels_corpus(labels_file: Path, rebuild_at: Path | None = None) -> Path:
    """The corpus the labels were searched on, beside them; when missing, rebuilt from the labelled questions at
    `rebuild_at` (default: beside them; labels committed under results/ give a place under runs/)."""
    from trainer.evals.labels import read_labels

    corpus = labels_file.with_name("corpus.jsonl")
    if corpus.is_file():
        return corpus
    corpus = rebuild_at or corpus
    if not corpus.is_file():
        corpus.parent.mkdir(parents=True, exist_ok=True)
        gate_corpus([lab.example for lab in read_labels(labels_file)], corpus)
    return corpus


@contextmanager
def gate_loop(model: str | None, engine_kind: str, corpus: Path) -> Iterator:
    """A SearchLoop on a local model (adapters merged) over a corpus; closes the engine afterwards."""
    from sem.engines import build_engine
    from sem.loop import SearchLoop
    from sem.settings import EngineKind, Settings

    with servable(model) as model_path:
        settings = Settings(engine=EngineKind(engine_kind), **({"model": model_path} if model_path else {}))
        loop_ = asyncio.new_event_loop()
        engine = loop_.run_until_complete(build_engine(settings))
        try:
            yield loop_, SearchLoop(engine, retriever(corpus)), settings.model_path
        finally:
            loop_.run_until_complete(engine.aclose())
            loop_.close()
