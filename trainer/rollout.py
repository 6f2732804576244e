"""TRL's `rollout_func` over `sem.loop`: the trainer's rollouts run the same loop the service runs.

For every prompt (TRL repeats each `num_generations` times) the policy answers through `SearchLoop` with the HF
engine on the policy's own weights; the returned `env_mask` is the loop's loss mask, so inserted `<result>` tokens
are never trained on. The trace fields the rewards read travel as extra columns.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from sem.cache import CachedSearch
from sem.engines.hf import HFEngine
from sem.loop import LoopOptions, SearchLoop, SearchPolicy, Trace


@dataclass
class RolloutConfig:
    max_searches: int = 2
    top_k: int = 3
    passage_chars: int = 300
    policy: SearchPolicy = SearchPolicy.auto


@dataclass
class RolloutStats:
    """Running totals, logged by the trainer's callback."""

    completions: int = 0
    searches: int = 0
    formatted: int = 0


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
        ids, mask = list(trace.completion_ids), list(trace.loss_mask)
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
    """A picklable rollout function: `rollout(prompts, trainer) -> dict` (TRL 1.16's RolloutFunc)."""

    def __init__(self, retriever: CachedSearch, config: RolloutConfig | None = None) -> None:
        self.retriever = retriever
        self.config = config or RolloutConfig()
        self.stats = RolloutStats()
        self.__name__ = "sem_rollout"

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
        model = trainer.accelerator.unwrap_model(trainer.model)
        tokenizer = trainer.processing_class
        engine = HFEngine(model, tokenizer, "policy")
        loop = SearchLoop(engine, self.retriever)
        options = self.options(trainer)
        was_training = model.training
        model.eval()
        try:
            traces = asyncio.run(self._run_all(loop, [self._question(p) for p in prompts], options))
        finally:
            model.train(was_training)
        self._record(traces)
        return trace_columns(traces, tokenizer.eos_token_id)

    @staticmethod
    def _question(prompt: Any) -> str:
        if isinstance(prompt, str):
            return prompt
        return str(prompt[-1]["content"])  # conversational: the last user message

    @staticmethod
    async def _run_all(loop: SearchLoop, questions: list[str], options: LoopOptions) -> list[Trace]:
        # One at a time: HF generate on CPU does not batch across requests.
        return [await loop.run(q, options, request_id=f"rollout-{uuid.uuid4().hex[:8]}") for q in questions]

    def _record(self, traces: list[Trace]) -> None:
        self.stats.completions += len(traces)
        self.stats.searches += sum(t.search_count for t in traces)
        self.stats.formatted += sum(t.follows_template for t in traces)
