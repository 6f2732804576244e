"""The models one service serves from one engine: the engine's own weights and every LoRA adapter `SEM_ADAPTERS`
names (vLLM's multi-LoRA, issue #42). Each has its own gate defaults (the calibration in its folder), its own search
(a `corpus.jsonl` in its folder is what that model searches, e.g. the world's passages) and its own search-rate
dial; a request picks one by `model`, and an unknown name is a 404 that lists the served ones."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sem.cache import CachedSearch
from sem.engines import Engine
from sem.gate import (
    DEFAULT_THRESHOLD,
    resolve_confidence_note,
    resolve_decision_threshold,
    resolve_policy,
    resolve_read_fresh,
    resolve_threshold,
)
from sem.loop import SearchLoop
from sem.rate import SearchRateDial
from sem.settings import LoopDefaults, Settings
from service.exceptions import ModelNotFound

log = logging.getLogger(__name__)

ADAPTER_CORPUS = "corpus.jsonl"  # in an adapter's folder: the passages that model searches
ADAPTER_EXAMPLES = "examples.json"  # in an adapter's folder: the playground's examples for it


@dataclass(slots=True)
class ServedModel:
    name: str
    root: str  # what its weights were loaded from: the model's path, or the adapter's folder
    adapter: str | None  # the engine's LoRA name; None for the engine's own weights
    defaults: LoopDefaults  # the deployment's, with this model's calibrated threshold, policy and note
    search: CachedSearch
    loop: SearchLoop
    rate_dial: SearchRateDial
    examples: Path | None = None

    @property
    def aliases(self) -> set[str]:
        """Names a request may use: the served name, and the path it was loaded from (and that path's last part)."""
        return {self.name, self.root, Path(self.root).name}


def model_defaults(loop: LoopDefaults, gate_home: str) -> LoopDefaults:
    """The deployment's defaults with what is stored beside a model (its `sem_gate.json`) filled in."""
    return loop.model_copy(update={
        "confidence_threshold": resolve_threshold(loop.confidence_threshold, gate_home),
        "policy": resolve_policy(loop.policy, gate_home),
        "confidence_note": resolve_confidence_note(loop.confidence_note, gate_home),
        "decision_threshold": resolve_decision_threshold(loop.decision_threshold, gate_home),
        "read_fresh": resolve_read_fresh(loop.read_fresh, gate_home),
    })  # fmt: skip


def served_model(name: str, root: str, adapter: str | None, settings: Settings, engine: Engine,
                 search: CachedSearch) -> ServedModel:  # fmt: skip
    defaults = model_defaults(settings.loop, root)
    calibrated = defaults.confidence_threshold
    dial = SearchRateDial(name, DEFAULT_THRESHOLD if calibrated is None else calibrated, redis_url=settings.redis_url)
    examples = Path(root) / ADAPTER_EXAMPLES if adapter else None
    return ServedModel(name, root, adapter, defaults, search, SearchLoop(engine, search, adapter=adapter), dial,
                       examples if examples and examples.is_file() else None)  # fmt: skip


def adapter_settings(settings: Settings, folder: Path) -> Settings | None:
    """The settings that build an adapter's own search (BM25 over the corpus in its folder), or None: it searches
    what the deployment searches."""
    corpus = folder / ADAPTER_CORPUS
    if not corpus.is_file():
        return None
    search = settings.search.model_copy(update={"backend": "bm25"})
    return settings.model_copy(update={"corpus": corpus, "search": search})


class ModelRegistry:
    """The served models by name, and the one a request naming none gets (`SEM_DEFAULT_MODEL`)."""

    def __init__(self, models: list[ServedModel], default: str | None = None) -> None:
        self.models = {m.name: m for m in models}
        self.default = self.models[default] if default else models[0]

    def get(self, name: str | None) -> ServedModel:
        if name is None:
            return self.default
        for model in self.models.values():
            if name in model.aliases:
                return model
        served = ", ".join(map(repr, self.models))
        raise ModelNotFound(f"the model {name!r} does not exist; this server serves {served}")

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.models.values())
