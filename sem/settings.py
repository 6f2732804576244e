"""One Settings object for the whole product, read from `SEM_*` environment variables (and `.env`).

Build it in entrypoints only (the CLI, `sem-serve`, tests) and pass the parts into constructors.
"""

from __future__ import annotations

import os
import warnings
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class EngineKind(StrEnum):
    auto = "auto"  # vllm when importable, else hf
    vllm = "vllm"
    hf = "hf"
    openai = "openai"  # a remote OpenAI-compatible completion server (SEM_ENGINE_URL)


class AdapterEngines(StrEnum):
    shared = "shared"  # vLLM's multi-LoRA: every adapter on the model's engine
    own = "own"  # each adapter merged into the model at start-up, on an engine of its own with its own CPU cores


class VLLMSettings(BaseModel):
    """Knobs of the in-process vLLM engine (`SEM_VLLM__<NAME>`)."""

    enforce_eager: bool = Field(True, description="Skip graph capture: ~20 s start-up on CPU instead of 70-110 s.")
    kv_cache_gib: float = Field(1.0, description="KV cache size on CPU (VLLM_CPU_KVCACHE_SPACE).")
    gpu_memory_utilization: float = Field(0.85, description="Share of GPU memory vLLM may take (CUDA only).")
    enable_prefix_caching: bool = Field(True, description="Resume after a search prefills only the new tokens.")
    max_num_seqs: int = Field(64, description="Most sequences batched in one step.")
    block_size: int | None = Field(
        None,
        ge=16,
        description="KV-cache block size in tokens; prefix caching reuses whole blocks only. Default: vLLM's (128 "
        "on a CPU, where a prompt shorter than that shares nothing; 16 on a GPU).",
    )
    enable_chunked_prefill: bool | None = Field(
        None,
        description="Split long prompts across steps; default: off on CPU (vLLM-CPU cannot rewind a seeded "
        "request's generator after a partial prefill and its engine died), vLLM's choice on GPU.",
    )


class Supervision(BaseModel):
    """How the service keeps its in-process engine alive (`SEM_SUPERVISION__<NAME>`)."""

    max_restarts: int | None = Field(
        3,
        ge=0,
        description="Failed starts in a row before the service gives up and exits; none: never give up "
        "(what a remote engine gets: it is not ours to restart, the service reconnects until it is back).",
    )
    backoff_s: float = Field(1.0, ge=0, description="Wait before the second start; doubled each time after.")
    max_backoff_s: float = Field(30.0, ge=0, description="Longest wait between two starts.")
    watch_interval_s: float = Field(5.0, gt=0, description="How often an idle engine's health is checked.")
    health_timeout_s: float = Field(10.0, gt=0, description="A health check slower than this counts as a death.")


class LoopDefaults(BaseModel):
    """Per-request defaults of the search loop (`SEM_LOOP__<NAME>`); requests may override them."""

    policy: Literal["auto", "never", "always", "confidence"] | None = Field(
        None,
        description="The search policy of a request that names none; default: the one stored with the model "
        "(`sem_gate.json`, e.g. `confidence` for a calibrated untuned model), else auto.",
    )

    max_searches: int = Field(3, ge=0, description="Search budget per question.")
    top_k: int = Field(3, ge=1, description="Passages per search.")
    max_tokens: int = Field(384, ge=1, description="Generated tokens per answer, over all turns.")
    temperature: float = Field(0.0, ge=0.0, description="Sampling temperature (0 = greedy).")
    passage_chars: int = Field(600, ge=50, description="Each passage is cut to this many characters in <result>.")
    confidence_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="`confidence` policy: search when the answer's least likely token is below this probability; "
        "default: the model's calibration (`trainer calibrate`), else 0.5.",
    )
    search_rate: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="`confidence` policy: search this share of questions, the least sure (the threshold follows the "
        "model's recent confidences: sem.rate); a request's `search_rate` wins. Default: the fixed threshold.",
    )
    confidence_note: bool | None = Field(
        None,
        description="`auto`: write the first answer's confidence into the context before the model decides; "
        "default: what the model was trained with (`sem_gate.json`), else off.",
    )
    decision_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="`auto` with the confidence note: search when the model's P(search) after the note (1 - P(end of "
        "turn)) is above this; default: the cut stored with the model (`trainer calibrate-decision`), else the "
        "sampled decision token.",
    )
    read_fresh: bool | None = Field(
        None,
        description="A search after a first answer: write the answer after it from the question and the results "
        "alone (the first answer stays in the reply, out of the model's context). Default: the model's gate file "
        "(`sem_gate.json`), else off.",
    )


class SearchSettings(BaseModel):
    """The search backend and its knobs (`SEM_SEARCH__<NAME>`; the old flat names, e.g. `SEM_SEARCH_BACKEND`, still
    work, with a deprecation warning)."""

    backend: str = Field("bm25", description="Search backend name (entry point sem.search_backends).")
    timeout_s: float = Field(10.0, description="Timeout of one call to a remote search backend.")
    dense_model: str | None = Field(None, description="Sentence-embedding model path for `dense` (default: bundled).")
    retriever_url: str | None = Field(None, description="Base URL of a Search-R1 style /retrieve server.")
    searxng_url: str | None = Field(None, description="Base URL of a SearXNG instance (JSON format enabled).")
    web_api_key: SecretStr | None = Field(None, description="Key of the tavily / brave / serper backend (secret).")
    web_api_url: str | None = Field(None, description="Endpoint override of the web API backends.")
    milvus_uri: str | None = Field(
        None, description="Milvus: a Lite .db file or a server URL (default: <SEM_HOME>/milvus/sem.db, Milvus Lite)."
    )
    milvus_token: SecretStr | None = Field(None, description="Milvus server token, user:password or API key (secret).")
    milvus_collection: str | None = Field(None, description="Milvus collection (default: sem_<corpus file name>).")
    milvus_mode: Literal["bm25", "dense", "hybrid"] = Field("bm25", description="Milvus search: bm25, dense, hybrid.")
    milvus_ranker: Literal["rrf", "weighted"] = Field("rrf", description="How `hybrid` fuses BM25 and dense lists.")
    # Benchmark tools (sem.search.costly), off by default: a search that costs what a web search API costs.
    simulated_latency_ms: float | None = Field(
        None, ge=0.0, description="Benchmarks: each backend call waits a log-normal time with this median (ms)."
    )
    simulated_latency_spread: float = Field(
        0.63, gt=0.0, description="Benchmarks: sigma of the wait's log (0.63 fits published web search API p95/p50)."
    )
    simulated_latency_seed: int | None = Field(None, description="Benchmarks: seed of the simulated waits.")
    price_per_1000: float = Field(
        0.0, ge=0.0, description="What 1,000 backend queries cost (counted in metrics and /v1/stats as spend)."
    )
    allow_domains: list[str] = Field(
        default_factory=list,
        description="Only passages from these domains (and their subdomains) reach the model; a local corpus "
        "passage without a URL is known by its id's prefix (`wiki:42` -> `wiki`). Empty: any.",
    )
    block_domains: list[str] = Field(
        default_factory=list, description="Passages from these domains (and subdomains) never reach the model."
    )

    @field_validator("allow_domains", "block_domains", mode="before")
    @classmethod
    def _domains(cls, value: Any, info: Any) -> Any:
        from sem.domains import normalize_domain

        if not isinstance(value, list):
            raise ValueError(f"SEM_SEARCH__{info.field_name.upper()}: expected a JSON list of domains")
        try:
            return [normalize_domain(d) for d in value]
        except ValueError as exc:
            raise ValueError(f"SEM_SEARCH__{info.field_name.upper()}: {exc}") from None


# The flat names SearchSettings replaced: still read (keyword arguments and SEM_* variables), with a warning.
FLAT_SEARCH_NAMES = {"search_backend": "backend", "search_timeout_s": "timeout_s"} | {
    name: name
    for name in ("dense_model", "retriever_url", "searxng_url", "web_api_key", "web_api_url", "milvus_uri",
                 "milvus_token", "milvus_collection", "milvus_mode", "milvus_ranker")
}  # fmt: skip


class Limits(BaseModel):
    """Caps on what one request may ask for, and on the load the service takes (`SEM_LIMITS__<NAME>`)."""

    max_question_chars: int = Field(4000, ge=1, description="Characters of the question (the last user message).")
    max_prompt_tokens: int = Field(3072, ge=16, description="Tokens of the whole prompt: template, history, question.")
    max_messages: int = Field(64, ge=1, description="Messages in one chat request.")
    max_searches: int = Field(8, ge=0, description="Most searches a request may ask for.")
    max_top_k: int = Field(20, ge=1, description="Most passages per search a request may ask for.")
    max_tokens: int = Field(2048, ge=1, description="Most tokens a request may ask to generate.")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Request body size; larger bodies get 413.")
    request_timeout_s: float = Field(120.0, gt=0, description="Deadline of one answer (engine and searches); 504.")
    max_concurrent: int = Field(64, ge=1, description="Answers generated at once; more wait in the queue.")
    max_queued: int = Field(256, ge=0, description="Answers waiting for a slot; beyond that 503 + Retry-After.")


class Window(StrEnum):
    """A search budget's window: fixed windows in UTC (the minute, the day, the calendar month)."""

    minute = "minute"
    day = "day"
    month = "month"


def _window_limits(name: str, value: Any) -> dict[Window, int]:
    """{window: searches} from settings, with an error naming the setting for an unknown window or a bad count."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f'{name}: expected {{window: searches}}, e.g. {{"day": 1000}}')
    limits: dict[Window, int] = {}
    for window, count in value.items():
        if window not in Window.__members__:
            raise ValueError(f"{name}: unknown window {window!r}; the windows are minute, day, month")
        try:
            searches = int(count)
        except (TypeError, ValueError):
            raise ValueError(f"{name}__{str(window).upper()}: {count!r} is not a number of searches") from None
        if searches < 0:
            raise ValueError(f"{name}__{str(window).upper()}: {searches} is negative; a budget is 0 or more searches")
        limits[Window(window)] = searches
    return limits


class BudgetSettings(BaseModel):
    """Search budgets across requests (`SEM_BUDGET__<NAME>`): searches a key, and the whole deployment, may run per
    window (e.g. `SEM_BUDGET__DEPLOYMENT__MONTH=20000`, `SEM_BUDGET__PER_KEY__DAY=100`). Counted in Redis when
    `SEM_REDIS_URL` is set (shared by every replica), else in this process. Off when nothing is set."""

    deployment: dict[Window, int] = Field(default_factory=dict, description="Searches the whole deployment may run.")
    per_key: dict[Window, int] = Field(
        default_factory=dict, description="Searches each API key (each client IP with auth off) may run."
    )
    keys: dict[str, dict[Window, int]] = Field(
        default_factory=dict,
        description="One key's own budget instead of per_key: {sha256 of the key: {window: searches}} (`sem keys "
        "budget` prints it, or stores it in Redis).",
    )
    count_cache_hits: bool = Field(
        False, description="A search served from the cache spends the budget too (default: free, only counted)."
    )

    @field_validator("deployment", "per_key", mode="before")
    @classmethod
    def _limits(cls, value: Any, info: Any) -> dict[Window, int]:
        return _window_limits(f"SEM_BUDGET__{info.field_name.upper()}", value)

    @field_validator("keys", mode="before")
    @classmethod
    def _key_limits(cls, value: Any) -> dict[str, dict[Window, int]]:
        if not isinstance(value, dict):
            raise ValueError("SEM_BUDGET__KEYS: expected {sha256: {window: searches}}")
        out = {}
        for digest, limits in value.items():
            if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
                raise ValueError(f"SEM_BUDGET__KEYS: {digest!r} is not a key's sha256 (`sem keys hash <key>`)")
            out[digest] = _window_limits(f"SEM_BUDGET__KEYS[{digest[:12]}…]", limits)
        return out

    @property
    def enabled(self) -> bool:
        return bool(self.deployment or self.per_key or self.keys)


class Auth(BaseModel):
    """Optional API keys and per-key rate limits (`SEM_AUTH__<NAME>`); off when no key is configured."""

    api_key_hashes: list[str] = Field(
        default_factory=list, description="sha256 hex digests of accepted keys (`sem keys new` makes one)."
    )
    redis_keys: bool = Field(False, description="Also accept keys whose sha256 is in the Redis set sem:api-keys.")
    rate_limit: int = Field(0, ge=0, description="Requests per key (per client IP without auth) a window; 0 = off.")
    rate_window_s: int = Field(60, ge=1, description="The rate limit's window (fixed windows, counted in Redis).")

    @property
    def enabled(self) -> bool:
        return bool(self.api_key_hashes) or self.redis_keys


class Settings(BaseSettings):
    """Everything configurable, with the embedded defaults (no Redis, default model, default corpus)."""

    model_config = SettingsConfigDict(env_prefix="SEM_", env_nested_delimiter="__", env_file=".env", extra="ignore")

    home: Path = Field(Path("~/.cache/sem"), description="Where assets, indexes and vLLM caches live.")
    model: str | None = Field(
        None,
        description="HF model id or path, or `base` (the embedded base, for adapters over it); default: the "
        "prepared SmolLM2 checkpoint (SEM's adapter merged in).",
    )
    served_model_name: str | None = Field(None, description="Name reported in responses; default: the model's.")
    adapters: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=dict,
        description="LoRA adapters served beside the model by one engine (vLLM), by name: "
        "`SEM_ADAPTERS=world=path/to/adapter,other=path`. A folder may carry its gate (sem_gate.json), its own "
        "search corpus (corpus.jsonl) and playground examples (examples.json).",
    )
    adapter_engines: AdapterEngines = Field(
        AdapterEngines.shared,
        description="How the adapters are served: `shared` (vLLM's multi-LoRA on the model's engine) or `own` "
        "(each merged into the model at start-up and served by a vLLM engine of its own, the CPU's cores split "
        "between the engines: on 2 cores two merged engines gave 0.86-0.96x one model's answers/s where multi-LoRA "
        "gave 0.40x, BENCHMARKS.md).",
    )
    default_model: str | None = Field(
        None,
        description="The model a request naming none gets (/v1/answer, the playground): a served adapter's "
        "name; default: the engine's model.",
    )
    engine: EngineKind = Field(EngineKind.auto, description="Generation engine: auto, vllm or hf.")
    engine_url: str | None = Field(None, description="Base URL of the model server for SEM_ENGINE=openai.")
    engine_api_key: SecretStr | None = Field(None, description="Bearer key of that server (secret).")
    tokenizer: str | None = Field(None, description="Tokenizer path or id (default: the model's).")
    chat_template: Path | None = Field(
        None, description="A Jinja chat template file for a model without one (as vLLM's --chat-template)."
    )
    dtype: str = Field(
        "auto",
        description="Weights dtype: auto = the checkpoint's (bfloat16) on vLLM, but float32 on an x86 CPU without "
        "bfloat16 instructions (AVX512-BF16, AMX) and for the hf engine on CPU.",
    )
    max_model_len: int = Field(4096, description="Context length the engine reserves for one sequence.")
    seed: int = 0

    corpus: Path | None = Field(None, description="Corpus JSONL (id, title, text); default: the prepared one.")
    examples: Path | None = Field(
        None, description="JSON list of {question, note} the playground offers (e.g. a world's examples.json)."
    )
    search: SearchSettings = SearchSettings()

    redis_url: str | None = Field(None, description="Redis URL for the search cache; unset = in-process LRU.")
    cache_ttl_s: int = Field(7 * 24 * 3600, description="Time to live of a cached search result.")
    cache_lru_size: int = Field(10_000, description="Entries of the in-process cache (also the Redis fallback).")
    tool_turn_ttl_s: int = Field(3600, ge=0, description="How long the model's turn before a search handed to the "
                                 "client is kept by the call's id, for the round after it (0: not kept).")  # fmt: skip

    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "info"
    log_format: Literal["json", "text"] = Field("json", description="Service logs: one JSON object a line, or text.")
    shutdown_timeout_s: float = Field(30.0, ge=0, description="On SIGTERM, how long in-flight requests may finish.")

    vllm: VLLMSettings = VLLMSettings()
    supervision: Supervision = Supervision()
    loop: LoopDefaults = LoopDefaults()
    limits: Limits = Limits()
    auth: Auth = Auth()
    budget: BudgetSettings = BudgetSettings()

    @field_validator("adapters", mode="before")
    @classmethod
    def _adapters(cls, value: Any) -> Any:
        """`name=path,name=path` (the variable's form) or a mapping."""
        if isinstance(value, str):
            pairs = [p.strip() for p in value.split(",") if p.strip()]
            if any("=" not in p or not p.split("=", 1)[0].strip() or not p.split("=", 1)[1].strip() for p in pairs):
                raise ValueError(f"SEM_ADAPTERS: expected name=path,name=path; got {value!r}")
            value = dict((k.strip(), v.strip()) for k, v in (p.split("=", 1) for p in pairs))
        return value

    @model_validator(mode="after")
    def _default_model_served(self) -> Settings:
        if self.default_model and self.default_model not in self.adapters and self.default_model != self.model_name:
            served = ", ".join([self.model_name, *self.adapters])
            raise ValueError(f"SEM_DEFAULT_MODEL={self.default_model!r} is not served (served: {served})")
        return self

    @model_validator(mode="before")
    @classmethod
    def _read_flat_search_names(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        found: dict[str, Any] = {}
        for old, new in FLAT_SEARCH_NAMES.items():
            if old in data:
                found[new] = data.pop(old)
            elif (value := os.environ.get(f"SEM_{old.upper()}")) is not None:
                found[new] = value
        if found:
            names = ", ".join(f"SEM_{old.upper()}" for old, new in FLAT_SEARCH_NAMES.items() if new in found)
            warnings.warn(f"{names}: deprecated, use SEM_SEARCH__<NAME> (e.g. SEM_SEARCH__BACKEND)",
                          DeprecationWarning, stacklevel=2)  # fmt: skip
            given = data.get("search") or {}
            data["search"] = {**found, **(given.model_dump() if isinstance(given, BaseModel) else given)}
        return data

    @property
    def model_name(self) -> str:
        """The engine's own model's name: SEM_SERVED_MODEL_NAME, else its folder's name (or its id)."""
        return self.served_model_name or Path(self.model_path).name or self.model_path

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser()

    @property
    def model_path(self) -> str:
        """The model to load: `SEM_MODEL`, else the embedded default prepared by `sem assets`."""
        if self.model == "base":
            from sem.assets import base_model_dir

            return str(base_model_dir(self.home_dir))
        if self.model:
            return self.model
        from sem.assets import default_model_dir

        return str(default_model_dir(self.home_dir))

    @property
    def corpus_path(self) -> Path:
        if self.corpus:
            return self.corpus.expanduser()
        from sem.assets import default_corpus_path

        return default_corpus_path(self.home_dir)
