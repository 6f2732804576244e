"""Prometheus metrics of one app (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sem.budget import DEPLOYMENT, Verdict
from sem.loop import Trace


class Metrics:
    """Prometheus metrics of one app. What lives elsewhere is read through callbacks: `cache_stats()` -> (hits,
    misses) of the search cache, `ready()` -> whether the engine and index are loaded."""

    def __init__(self, cache_stats: Callable[[], tuple[int, int]], ready: Callable[[], bool],
                 price_per_1000: float = 0.0) -> None:  # fmt: skip
        self.registry = CollectorRegistry()
        self.price_per_query = price_per_1000 / 1000
        self.answers = Counter("sem_answers", "Answers served.", ["policy", "finish_reason"], registry=self.registry)
        self.searches = Counter("sem_searches", "Searches run by the loop.", registry=self.registry)
        self.cancelled = Counter(
            "sem_answers_cancelled", "Answers whose client went away; their generation was aborted.", ["api"],
            registry=self.registry,
        )  # fmt: skip
        self.search_errors = Counter("sem_search_errors", "Searches that failed.", registry=self.registry)
        self.generated_tokens = Counter("sem_generated_tokens", "Tokens generated.", registry=self.registry)
        self.latency = Histogram(
            "sem_answer_latency_seconds",
            "End-to-end answer latency.",
            buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.backend_latency = Histogram(
            "sem_search_backend_latency_seconds",
            "Latency of one (batched) call to the search backend.",
            ["backend"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.backend_queries = Counter(
            "sem_search_backend_queries", "Queries sent to the search backend (cache misses).", ["backend"],
            registry=self.registry,
        )  # fmt: skip
        self.backend_errors = Counter(
            "sem_search_backend_errors", "Failed calls to the search backend.", ["backend"], registry=self.registry
        )
        self.search_rate_asked = Histogram(
            "sem_search_rate_asked", "Search rates asked of the dial (request or deployment), and searched at "
            "(`used`: held lower by a budget).", ["kind"], buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0),
            registry=self.registry,
        )  # fmt: skip
        self.search_rate_answers = Counter(
            "sem_search_rate_answers", "Answers the dial set the threshold of, by whether they searched (the rate "
            "achieved is searched / all).", ["searched"], registry=self.registry,
        )  # fmt: skip
        self.search_spend = Counter(
            "sem_search_spend", "What the backend's queries cost (SEM_SEARCH__PRICE_PER_1000 per 1,000 queries).",
            ["backend"], registry=self.registry,
        )  # fmt: skip
        self.searches_per_request = Histogram(
            "sem_searches_per_request", "Searches one answer took.", buckets=(0, 1, 2, 3, 4, 6, 8),
            registry=self.registry,
        )  # fmt: skip
        self.engine_events = Counter(
            "sem_engine_events", "Engine deaths, restarts, and fatal give-ups (the log says why).", ["event"],
            registry=self.registry,
        )  # fmt: skip
        self.budget_spends = Counter(
            "sem_search_budget_spends", "Searches asked of the search budget: spent, or refused (it was spent).",
            ["outcome"], registry=self.registry,
        )  # fmt: skip
        self.budget_cache_hits = Counter(
            "sem_search_budget_cache_hits", "Searches served from the cache under a budget (free unless "
            "SEM_BUDGET__COUNT_CACHE_HITS).", registry=self.registry,
        )  # fmt: skip
        self.budget_exhausted = Counter(
            "sem_search_budget_exhausted", "Requests that found the budget spent: answered closed_book, or refused "
            "(429, policy always).", ["outcome"], registry=self.registry,
        )  # fmt: skip
        self.budget_spent = Gauge(
            "sem_search_budget_spent", "The deployment's searches spent in the current window (latest seen).",
            ["window"], registry=self.registry,
        )  # fmt: skip
        self.budget_left = Gauge(
            "sem_search_budget_left", "The deployment's searches left in the current window (latest seen).",
            ["window"], registry=self.registry,
        )  # fmt: skip
        self._cache_stats = cache_stats
        hits = Gauge("sem_search_cache_hits", "Search cache hits since start.", registry=self.registry)
        misses = Gauge("sem_search_cache_misses", "Search cache misses since start.", registry=self.registry)
        hits.set_function(lambda: cache_stats()[0])
        misses.set_function(lambda: cache_stats()[1])
        loaded = Gauge("sem_ready", "1 once the engine and index are loaded.", registry=self.registry)
        loaded.set_function(lambda: 1.0 if ready() else 0.0)

    def record(self, policy: str, trace: Trace, seconds: float, *, dialled: bool = False) -> None:
        """Count one finished answer (`dialled`: its threshold came from the search-rate dial)."""
        self.answers.labels(policy, trace.finish_reason).inc()
        if dialled:
            self.search_rate_answers.labels("yes" if trace.search_count else "no").inc()
        self.searches.inc(trace.search_count)
        self.searches_per_request.observe(trace.search_count)
        self.search_errors.inc(len(trace.search_errors))
        self.generated_tokens.inc(trace.generated_tokens)
        self.latency.observe(seconds)

    def summary(self) -> dict[str, Any]:
        """The counters as plain numbers (what `GET /v1/stats` returns)."""
        by_policy: dict[str, int] = {}
        for sample in self.answers.collect()[0].samples:
            if sample.name.endswith("_total"):
                policy = sample.labels["policy"]
                by_policy[policy] = by_policy.get(policy, 0) + int(sample.value)
        answers = sum(by_policy.values())
        searches = int(_value(self.searches))
        hits, misses = self._cache_stats()
        latency_sum = next(s.value for s in self.latency.collect()[0].samples if s.name.endswith("_sum"))
        return {
            "answers": answers,
            "answers_by_policy": dict(sorted(by_policy.items())),
            "searches": searches,
            "searches_per_answer": round(searches / answers, 3) if answers else None,
            "search_errors": int(_value(self.search_errors)),
            "cache_hits": hits,
            "cache_misses": misses,
            "cache_hit_rate": round(hits / (hits + misses), 3) if hits + misses else None,
            "mean_latency_ms": round(1000 * latency_sum / answers, 1) if answers else None,
            "search_seconds": round(_total(self.backend_latency, "_sum"), 3),  # time spent waiting on the backend
            "search_spend": round(_total(self.search_spend, "_total"), 6),
            "search_rate_achieved": self.rate_achieved(),
        }

    def rate_achieved(self) -> float | None:
        """The share of dialled answers that searched; None before any."""
        counts = {s.labels["searched"]: s.value for s in self.search_rate_answers.collect()[0].samples
                  if s.name.endswith("_total")}  # fmt: skip
        answered = sum(counts.values())
        return round(counts.get("yes", 0.0) / answered, 4) if answered else None

    def observe_rate(self, asked: float, used: float) -> None:
        self.search_rate_asked.labels("asked").observe(asked)
        self.search_rate_asked.labels("used").observe(used)

    def observe_budget(self, verdict: Verdict) -> None:
        """`sem.budget.SearchBudget`'s observer: every check and spend (per-key standings stay out: one series a key
        would be unbounded; `GET /v1/budget` shows a key its own)."""
        if verdict.asked:
            self.budget_spends.labels("spent" if verdict.spent else "refused").inc()
        for standing in verdict.standings:
            if standing.limit.scope == DEPLOYMENT:
                self.budget_spent.labels(standing.limit.window.value).set(standing.spent)
                self.budget_left.labels(standing.limit.window.value).set(standing.left)

    def engine_event(self, event: str, reason: str) -> None:
        """`SupervisedEngine`'s `on_event`: "death", "restart" or "fatal"."""
        self.engine_events.labels(event).inc()

    def observe_backend(self, backend: str, seconds: float, queries: int, error: bool) -> None:
        """`sem.cache.BackendObserver`: one call to the search backend (billed per query, as web search APIs are)."""
        self.backend_latency.labels(backend).observe(seconds)
        self.backend_queries.labels(backend).inc(queries)
        self.search_spend.labels(backend).inc(queries * self.price_per_query)
        if error:
            self.backend_errors.labels(backend).inc()


def _value(counter: Counter) -> float:
    return next(s.value for s in counter.collect()[0].samples if s.name.endswith("_total"))


def _total(metric: Counter | Histogram, suffix: str) -> float:
    """A labelled metric's samples with this suffix, summed over its labels."""
    return sum(s.value for s in metric.collect()[0].samples if s.name.endswith(suffix))
