"""TRL's `rollout_func` over `sem.loop`: the trainer's rollouts run the same loop the service runs.

For every prompt (TRL repeats each `num_generations` times) the policy answers through `SearchLoop`, either on SEM's
vLLM engine (all of a step's answers at once, continuously batched, the policy's weights pushed after every optimizer
step) or with HF `generate` on the policy itself (one answer at a time; the fallback where vLLM does not run). The
returned `env_mask` is the loop's loss mask, so inserted `<result>` tokens are never trained on. The trace fields the
rewards read travel as extra columns.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sem.cache import CachedSearch
from sem.engines.hf import HFEngine
from sem.errors import EngineError
from sem.loop import LoopOptions, SearchLoop, SearchPolicy, Trace
from sem.trace import require_one_context

if TYPE_CHECKING:
    from trainer.train.vllm_rollout import RolloutEngine

RolloutEngineKind = Literal["vllm", "hf"]
TRAIN_MAX_SEARCHES = 2  # a shorter budget than serving's: rollouts stay within the completion length

log = logging.getLogger(__name__)


@dataclass
class RolloutConfig:
    max_searches: int = TRAIN_MAX_SEARCHES
    top_k: int = LoopOptions().top_k
    passage_chars: int = 300
    policy: SearchPolicy = SearchPolicy.auto
    engine: RolloutEngineKind = "hf"
    vllm_dtype: str = "float32"  # the policy's own dtype on CPU: vLLM's log-probs then match the trainer's
    vllm_server_url: str | None = None  # a `vllm serve` for rollouts (else vLLM runs in the trainer's process)
    vllm_gpu_memory_utilization: float = 0.3  # colocated on a GPU: what vLLM may take beside training
    seed: int = 0  # each rank's engine samples with seed + its rank: copies of a prompt split across ranks differ


def engine_seed(seed: int, trainer: Any) -> int:
    """The rollout engine's seed on this rank: the run's seed plus the rank, so that ranks sampling copies of one
    prompt (a batch below num_generations splits a group across ranks) give different answers."""
    return seed + getattr(getattr(trainer, "accelerator", None), "process_index", 0)


@dataclass
class RolloutStats:
    """Running totals, logged by the trainer's callback and read by bench/training.py."""

    completions: int = 0
    searches: int = 0
    formatted: int = 0
    generated_tokens: int = 0
    rollout_s: float = 0.0  # generation, searches included
    sync_s: float = 0.0  # weight pushes into vLLM
    syncs: int = 0
    engine_start_s: float = 0.0  # starting vLLM (once)


def trace_columns(traces: list[Trace], eos_id: int | None) -> dict[str, list[Any]]:
    """TRL's required keys plus the reward columns, from finished traces.

    A completion that stopped on `</answer>` has no EOS: one is appended (masked, log-prob 0), or TRL would count
    it as truncated.
    """
    out: dict[str, list[Any]] = {
        "prompt_ids": [],
        "completion_ids": [],
        "logprobs": [],
        "env_mask": [],
        "trace_answers": [],
        "search_count": [],
        "follows_template": [],
    }
    for trace in traces:
        ids, mask = list(require_one_context(trace).completion_ids), list(trace.loss_mask)
        logprobs = list(trace.logprobs or [0.0] * len(ids))
        if eos_id is not None and (not ids or ids[-1] != eos_id):
            ids.append(eos_id)
            mask.append(0)
            logprobs.append(0.0)
        out["prompt_ids"].append(list(trace.prompt_ids))
        out["completion_ids"].append(ids)
        out["logprobs"].append(logprobs)
        out["env_mask"].append(mask)
        out["trace_answers"].append(trace.answers)
        out["search_count"].append(trace.search_count)
        out["follows_template"].append(trace.follows_template)
    return out


class SEMRollout:
    """The rollout function: `rollout(prompts, trainer) -> dict` (TRL 1.16's RolloutFunc).

    With `engine="vllm"` it also stands in for TRL's `vllm_generation`: TRL calls `sync_weights()` whenever the
    step has moved on (see `trainer.train.grpo.SEMGRPOTrainer`). `close()` stops the engine.
    """

    def __init__(self, retriever: CachedSearch, config: RolloutConfig | None = None) -> None:
        self.retriever = retriever
        self.config = config or RolloutConfig()
        self.stats = RolloutStats()
        self.__name__ = "sem_rollout"
        self._trainer: Any = None
        self._vllm: RolloutEngine | None = None
        self._synced_step: int | None = None

    @property
    def uses_vllm(self) -> bool:
        return self.config.engine == "vllm"

    def attach(self, trainer: Any) -> None:
        self._trainer = trainer

    def sync_weights(self) -> None:
        """Push the policy's current weights into vLLM (TRL calls this before the first rollout of a step)."""
        from trainer.train.ranks import push_role
        from trainer.train.vllm_rollout import is_sharded

        trainer = self._trainer
        model = trainer.accelerator.unwrap_model(trainer.model)
        engine = self._engine(model)
        # one server for all ranks: the main one sends, the others gather (ZeRO-3) or do nothing
        main = getattr(trainer.accelerator, "is_main_process", True)
        role = push_role(server=bool(self.config.vllm_server_url), sharded=is_sharded(model), main=main)
        if role != "skip":
            self.stats.sync_s += engine.push_weights(model, write=role == "write")
        if self.config.vllm_server_url and hasattr(trainer.accelerator, "wait_for_everyone"):
            trainer.accelerator.wait_for_everyone()  # no rank samples from the old weights
        self.stats.syncs += 1
        self._synced_step = trainer.state.global_step

    def _engine(self, model: Any) -> RolloutEngine:
        if self._vllm is None:
            from trainer.train.vllm_rollout import RolloutEngine

            if not self.config.vllm_server_url:
                self._check_placement()

            started = time.perf_counter()
            # the checkpoint the policy started from gives vLLM its architecture and tokenizer; weights follow
            self._vllm = RolloutEngine(
                model.config._name_or_path,
                server_url=self.config.vllm_server_url,
                dtype=self.config.vllm_dtype,
                gpu_memory_utilization=self.config.vllm_gpu_memory_utilization,
                seed=engine_seed(self.config.seed, self._trainer),
            )
            self.stats.engine_start_s += time.perf_counter() - started
            log.info("vLLM rollout engine ready in %.1f s", time.perf_counter() - started)
        return self._vllm

    def _check_placement(self) -> None:
        import torch

        from trainer.train.ranks import colocated_placement_error

        processes = getattr(getattr(self._trainer, "accelerator", None), "num_processes", 1)
        error = colocated_placement_error(processes, torch.cuda.is_available())
        if error:
            raise EngineError(error)

    def close(self) -> None:
        if self._vllm is not None:
            self._vllm.close()
            self._vllm = None

    def options(self, trainer: Any) -> LoopOptions:
        args = trainer.args
        return LoopOptions(
            policy=self.config.policy,
            max_searches=self.config.max_searches,
            top_k=self.config.top_k,
            max_tokens=args.max_completion_length,  # one budget across turns
            temperature=args.temperature,
            top_p=args.top_p,
            logprobs=True,
            passage_chars=self.config.passage_chars,
            force_answer=False,  # the reward must see what the policy did
        )

    def __call__(self, prompts: list[Any], trainer: Any) -> dict[str, list[Any]]:
        if self.uses_vllm and self._synced_step != trainer.state.global_step:  # TRL has not pushed them (or no TRL)
            self._trainer = trainer
            self.sync_weights()
        started = time.perf_counter()
        questions = [self._question(p) for p in prompts]
        options = self.options(trainer)
        if self.uses_vllm:
            traces = self._run_vllm(questions, options, trainer)
        else:
            traces = self._run_hf(questions, options, trainer)
        self.stats.rollout_s += time.perf_counter() - started
        self._record(traces)
        return trace_columns(traces, trainer.processing_class.eos_token_id)

    def _run_vllm(self, questions: list[str], options: LoopOptions, trainer: Any) -> list[Trace]:
        engine = self._engine(trainer.accelerator.unwrap_model(trainer.model))
        loop = SearchLoop(engine.engine, self.retriever)
        return engine.run(self._run_concurrently(loop, questions, options))

    def _run_hf(self, questions: list[str], options: LoopOptions, trainer: Any) -> list[Trace]:
        model = trainer.accelerator.unwrap_model(trainer.model)
        loop = SearchLoop(HFEngine(model, trainer.processing_class, "policy"), self.retriever)
        was_training = model.training
        model.eval()
        try:
            return asyncio.run(self._run_one_by_one(loop, questions, options))
        finally:
            model.train(was_training)

    @staticmethod
    def _question(prompt: Any) -> str:
        if isinstance(prompt, str):
            return prompt
        return str(prompt[-1]["content"])  # conversational: the last user message

    @staticmethod
    async def _run_one_by_one(loop: SearchLoop, questions: list[str], options: LoopOptions) -> list[Trace]:
        # HF generate on CPU does not batch across requests.
        return [await loop.run(q, options, request_id=_request_id()) for q in questions]

    @staticmethod
    async def _run_concurrently(loop: SearchLoop, questions: list[str], options: LoopOptions) -> list[Trace]:
        # vLLM batches them; a group's copies of one prompt share its prefix cache.
        return list(await asyncio.gather(*(loop.run(q, options, request_id=_request_id()) for q in questions)))

    def _record(self, traces: list[Trace]) -> None:
        self.stats.completions += len(traces)
        self.stats.generated_tokens += sum(t.generated_tokens for t in traces)
        self.stats.searches += sum(t.search_count for t in traces)
        self.stats.formatted += sum(t.follows_template for t in traces)


def _request_id() -> str:
    return f"rollout-{uuid.uuid4().hex[:8]}"
