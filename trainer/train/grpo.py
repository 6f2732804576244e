"""GRPO with TRL: the policy answers through `sem.loop` (rollout), scored by a search-efficiency reward."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from sem.cache import CachedSearch
from trainer.data import Example
from trainer.train.lora import is_adapter, load_trainable, lora_config
from trainer.train.ranks import is_main
from trainer.train.rewards import reward_functions
from trainer.train.rollout import RolloutConfig, SEMRollout

if TYPE_CHECKING:
    from trainer.train.config import SEMGRPOConfig

log = logging.getLogger(__name__)


class JSONLLogger(TrainerCallback):
    """Appends every log record (reward parts, search counts, loss, and `extra()`'s totals) to a JSONL file, from the
    main rank only."""

    def __init__(self, path: Path, extra: Callable[[], dict[str, Any]] | None = None) -> None:
        self.path = path
        self.extra = extra or dict
        self.started = time.perf_counter()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        # every rank calls this; one line a step, from the main rank (state says so under a Trainer)
        if not logs or not getattr(state, "is_world_process_zero", is_main()):
            return
        elapsed = round(time.perf_counter() - self.started, 1)
        record = {"step": state.global_step, "elapsed_s": elapsed, **logs, **self.extra()}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


def _trainer_class() -> type:
    from trl import GRPOTrainer

    class SEMGRPOTrainer(GRPOTrainer):
        """GRPOTrainer whose rollouts run SEM's loop, on SEM's vLLM engine when the rollout has one.

        TRL keys two things on `use_vllm`: the weight sync before a new step's first generation and the importance-
        sampling correction of the engine's log-probs (with its logged mismatch). Both are what our engine needs, so
        after TRL has set up without an engine of its own (`args.use_vllm` stays False), the trainer claims vLLM and
        the rollout stands in for TRL's `vllm_generation` (it has `sync_weights()`).
        """

        def __init__(self, *args: Any, rollout_func: SEMRollout, **kwargs: Any) -> None:
            super().__init__(*args, rollout_func=rollout_func, **kwargs)
            if rollout_func.uses_vllm:
                rollout_func.attach(self)
                self.use_vllm = True
                self.vllm_generation = rollout_func
                self._last_loaded_step = -1

    return SEMGRPOTrainer


def build_grpo_trainer(
    model_path: str, examples: list[Example], retriever: CachedSearch, args: SEMGRPOConfig
) -> tuple[Any, SEMRollout]:
    """The TRL trainer and its rollout (close the rollout when done: it may hold a vLLM engine)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.train.lora import tokenizer_source

    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(model_path))  # a shipped adapter carries none
    rows = [
        {"prompt": ex.prompt_text(), "answers": list(ex.answers), "source": ex.source,
         "choices": list(ex.choices or []), "kind": ex.kind}
        for ex in examples
    ]  # fmt: skip
    funcs, weights = reward_functions(args.reward, **args.reward_params)
    args.reward_weights = weights
    rollout = SEMRollout(
        retriever,
        RolloutConfig(
            max_searches=args.max_searches, top_k=args.top_k, engine=args.rollout_engine,  # type: ignore[arg-type]
            vllm_dtype=args.vllm_dtype, vllm_server_url=args.vllm_server_base_url,
            vllm_gpu_memory_utilization=args.vllm_gpu_memory_utilization, seed=args.seed,
        ),
    )  # fmt: skip
    peft_config = None
    if is_adapter(model_path):  # an SFT adapter: keep training it, the result stays one adapter over the base
        model = load_trainable(model_path)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        peft_config = lora_config(args.lora_r) if args.lora else None
    trainer = _trainer_class()(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        rollout_func=rollout,
        callbacks=[JSONLLogger(output_dir / "log.jsonl", extra=lambda: {"rollout": asdict(rollout.stats)})],
    )
    return trainer, rollout


def run_grpo(
    model_path: str, examples: list[Example], retriever: CachedSearch, args: SEMGRPOConfig, *, resume: bool = False
) -> Path:
    """Train; returns the folder of the final model (a LoRA adapter when `args.lora`)."""
    from transformers.trainer_utils import get_last_checkpoint

    output_dir = Path(args.output_dir)
    trainer, rollout = build_grpo_trainer(model_path, examples, retriever, args)
    last = get_last_checkpoint(str(output_dir)) if resume else None
    if resume:
        log.info("resuming from %s", last or "the start (no checkpoint yet)")
    log.info("rollouts on %s", args.rollout_engine)
    try:
        trainer.train(resume_from_checkpoint=last)
    finally:
        rollout.close()
    final = output_dir / "final"
    trainer.save_model(str(final))
    trainer.processing_class.save_pretrained(str(final))
    stats = rollout.stats
    log.info(
        "grpo done: %d completions, %.2f searches each, %.0f%% in template",
        stats.completions,
        stats.searches / max(stats.completions, 1),
        100 * stats.formatted / max(stats.completions, 1),
    )
    return final
