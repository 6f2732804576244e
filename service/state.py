"""What the service holds while it runs: engine, cached search, loop, metrics; loaded in the background."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from sem.budget import SearchBudget
from sem.cache import CachedSearch, LRUStore, RedisStore
from sem.domains import DomainFilter
from sem.engines import Engine, build_engine, resolve_engine_kind
from sem.engines.supervisor import EngineFactory, EngineState, SupervisedEngine
from sem.errors import SearchModeError
from sem.loop import SearchLoop, Trace
from sem.rate import SearchRateDial
from sem.search import build_backend
from sem.search.base import SearchBackend
from sem.settings import AdapterEngines, EngineKind, Settings
from service.admission import Admission
from service.engines import BIND, own_engine, pinned, split_cores
from service.exceptions import InvalidRequest, NotReadyError
from service.metrics import Metrics
from service.models import ModelRegistry, ServedModel, adapter_settings, served_model
from service.runner import Runner
from service.security import Security
from service.tool_turns import TurnMemory

log = logging.getLogger(__name__)


class ServiceState:
    """Components of one app. `start()` loads them; until it is done, `/readyz` says 503."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine | None = None,
        on_fatal: Callable[[str], None] | None = None,
        engine_factory: EngineFactory | None = None,
    ) -> None:
        self.settings = settings
        self.engine: Engine | None = engine
        self._owns_engine = engine is None
        # SEM_ADAPTER_ENGINES=own: the adapters get engines of their own (service.engines), the model's is plain,
        # and each engine its share of the cores unless the operator bound them (VLLM_CPU_OMP_THREADS_BIND)
        self.own_engines: dict[str, SupervisedEngine] = {}
        own = settings.adapter_engines is AdapterEngines.own and bool(settings.adapters)
        self._cores: list[str | None] = [None] * (1 + len(settings.adapters))
        if own and BIND not in os.environ:
            self._cores = list(split_cores(os.cpu_count() or 1, 1 + len(settings.adapters)))
        plain = settings.model_copy(update={"adapters": {}}) if own else settings
        self._engine_factory = engine_factory or pinned(lambda: build_engine(plain), self._cores[0])
        # Set when the service cannot serve and will not recover (start-up failed, the engine cannot be brought
        # back): /healthz fails so a liveness probe acts, and `on_fatal` (sem-serve: exit non-zero) is called.
        self.fatal: str | None = None
        self._on_fatal = on_fatal
        self.search: CachedSearch | None = None
        self.loop: SearchLoop | None = None
        self.loop_defaults = settings.loop  # with the model's calibrated confidence threshold once loaded
        self.error: str | None = None
        self.metrics = Metrics(cache_stats=self._cache_stats, ready=lambda: self.ready,
                               price_per_1000=settings.search.price_per_1000)  # fmt: skip
        self.security = Security(settings.auth, settings.redis_url)
        # Search budgets across requests (logs at start-up when it counts in this process only) and the deployment's
        # source filter, which every request's narrows.
        self.budget = SearchBudget(settings.budget, settings.redis_url, observer=self.metrics.observe_budget)
        self.budget.on_hit = self.metrics.budget_cache_hits.inc
        self.domains = DomainFilter.of(settings.search.allow_domains, settings.search.block_domains)
        self.admission = Admission(settings.limits)
        self.rate_dial: SearchRateDial | None = None  # the default model's search-rate dial, once it is loaded
        self.models: ModelRegistry | None = None  # every served model (the engine's and its adapters), once loaded
        # the model's turns before searches handed to clients, for the round after (service.tool_turns)
        turns = RedisStore(settings.redis_url) if settings.redis_url else LRUStore(settings.cache_lru_size)
        self.turns = TurnMemory(turns, settings.tool_turn_ttl_s)
        self.runner = Runner(self.admission, self.metrics, on_trace=self._observe)
        self.load_seconds: float | None = None
        self._search_health: tuple[float, str | None] | None = None
        self.started_at = int(time.time())

    async def search_health(self, timeout_s: float, max_age_s: float = 30.0) -> str | None:
        """None when the search backend passes its health check, else what is wrong; one check per `max_age_s`."""
        now = time.monotonic()
        if self._search_health is not None and now - self._search_health[0] < max_age_s:
            return self._search_health[1]
        problem = None
        try:
            await asyncio.wait_for(self.search.check_health(), timeout_s)  # type: ignore[union-attr]
        except Exception as exc:  # SearchError, a timeout, a backend's own exception
            problem = f"the search backend is unhealthy: {exc or type(exc).__name__}; answers go on without results"
        self._search_health = (now, problem)
        return problem

    async def _observe(self, trace: Trace, model: str | None) -> None:
        """Every finished answer: its first answer's confidence goes into its model's search-rate dial's window; a
        turn that handed a search to the client is kept for the round after."""
        if self.models is not None and trace.confidence is not None:
            await self.models.get(model).rate_dial.observe(trace.confidence)
        await self.turns.remember(trace)

    def served(self, name: str | None) -> ServedModel:
        """The model a request names (None: the default), or a 404 listing the served ones; a 503 while the models
        load or the engine is down (`require_loop`)."""
        self.require_loop()
        assert self.models is not None  # loaded with the loop
        model = self.models.get(name)
        if model.name in self.own_engines:
            self.own_engines[model.name].require_ready()
        return model

    async def _load_models(self, engine: Engine) -> ModelRegistry:
        """The engine's own model and each adapter, each with its gate defaults and search (service.models)."""
        assert self.search is not None
        settings = self.settings
        models = [served_model(self.model_name, settings.model_path, None, settings, engine, self.search)]
        for i, (name, path) in enumerate(settings.adapters.items(), 1):
            own = adapter_settings(settings, Path(path))
            search = self.search
            if own is not None:  # its own corpus: an index of its own, the same cache store
                search = self._cached(await build_backend(own))
            if settings.adapter_engines is AdapterEngines.own:
                mine = self.own_engines[name] = await own_engine(settings, name, Path(path), self._cores[i],
                                                                 self._engine_event)  # fmt: skip
                models.append(served_model(name, str(path), None, settings, mine, search))
            else:
                models.append(served_model(name, str(path), name, settings, engine, search))
        return ModelRegistry(models, settings.default_model)

    def _cached(self, backend: SearchBackend) -> CachedSearch:
        """A backend behind the cache; every served model's search shares the one Redis connection's settings (keys
        carry the backend's name and version, so corpora never mix)."""
        settings = self.settings
        store = RedisStore(settings.redis_url) if settings.redis_url else None
        return CachedSearch(backend, store, ttl_s=settings.cache_ttl_s, fallback_entries=settings.cache_lru_size,
                            observer=self.metrics.observe_backend)  # fmt: skip

    def _cache_stats(self) -> tuple[int, int]:
        stats = self.search.stats if self.search else None
        return (stats.hits, stats.misses) if stats else (0, 0)

    @property
    def ready(self) -> bool:
        engines = [self.engine, *self.own_engines.values()]
        if any(isinstance(e, SupervisedEngine) and e.state is not EngineState.ready for e in engines):
            return False
        return self.loop is not None

    def _engine_event(self, event: str, reason: str) -> None:
        self.metrics.engine_event(event, reason)
        if event == "fatal":
            self._give_up(f"the model engine cannot be brought back: {reason}")

    def _give_up(self, reason: str) -> None:
        if self.fatal is None:
            self.fatal = reason
            if self._on_fatal is not None:
                self._on_fatal(reason)

    async def start(self) -> None:
        started = time.perf_counter()
        try:
            self.search = self._cached(await build_backend(self.settings))
            if self.engine is None:
                supervision = self.settings.supervision
                if resolve_engine_kind(self.settings.engine) is EngineKind.openai:
                    # A remote engine is not ours to restart: reconnect until it is back, never exit over it.
                    supervision = supervision.model_copy(update={"max_restarts": None})
                supervised = SupervisedEngine(self._engine_factory, supervision, on_event=self._engine_event)
                self.engine = supervised
                await supervised.start()
            self.models = await self._load_models(self.engine)
            default = self.models.default
            self.loop_defaults, self.rate_dial = default.defaults, default.rate_dial
            self.loop = default.loop
            self.load_seconds = time.perf_counter() - started
            log.info("ready in %.1fs: engine=%s models=%s", self.load_seconds, self.engine.name,
                     ", ".join(m.name for m in self.models))  # fmt: skip
        except Exception as exc:  # reported by /readyz, /healthz and every request, then sem-serve exits
            self.error = f"{type(exc).__name__}: {exc}"
            log.critical("start-up failed: %s", self.error)
            self._give_up(f"start-up failed: {self.error}")

    def check_search_mode(self, mode: str | None, *, param: str, search: CachedSearch | None = None) -> None:
        """400 before any work for a mode the backend (the model's, else the deployment's) does not offer (say which
        it does)."""
        search = search or self.search
        if search is None:
            return
        try:
            search.check_mode(mode)
        except SearchModeError as exc:
            raise InvalidRequest(str(exc), param=param) from exc

    def require_loop(self) -> SearchLoop:
        """The loop, when the service can answer now; else a 503 before any work (and before a stream's 200)."""
        if self.loop is not None:
            if isinstance(self.engine, SupervisedEngine):
                self.engine.require_ready()
            return self.loop
        if self.error:
            raise NotReadyError(f"the service failed to start: {self.error}")
        raise NotReadyError("the model and the search index are still loading; retry shortly")

    @property
    def model_name(self) -> str:
        if self.settings.served_model_name:
            return self.settings.served_model_name
        if self.engine is not None:
            return self.engine.model_name
        return self.settings.model_name

    async def aclose(self) -> None:
        await self.security.aclose()
        await self.budget.aclose()
        await self.turns.aclose()
        for model in self.models or ():
            await model.rate_dial.aclose()
            if model.search is not self.search:
                await model.search.aclose()
        if self.search is not None:
            await self.search.aclose()
        for engine in self.own_engines.values():
            await engine.aclose()
        if self.engine is not None and self._owns_engine:
            await self.engine.aclose()
