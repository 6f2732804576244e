"""GRPO with TRL: the policy answers through `sem.loop` (rollout), scored by a search-efficiency reward."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from sem.cache import CachedSearch
from sem.loop import LoopOptions
from trainer.data import Example
from trainer.lora import is_adapter, load_trainable, lora_config
from trainer.rewards import reward_functions
from trainer.rollout import TRAIN_MAX_SEARCHES, RolloutConfig, RolloutEngineKind, SEMRollout

log = logging.getLogger(__name__)


def default_rollout_engine() -> RolloutEngineKind:
    """vLLM where it is installed, HF `generate` otherwise."""
    import importlib.util

    return "vllm" if importlib.util.find_spec("vllm") is not None else "hf"


@dataclass
class GRPOSettings:
    """SEM's knobs on top of TRL's GRPOConfig (the rest keep TRL's defaults)."""

    reward: str = "sem"
    tau: float = 0.8
    max_steps: int = 200
    batch_size: int = 4  # answers per device micro-batch; x processes x accumulation = whole groups of generations
    gradient_accumulation_steps: int = 1  # micro-batches per optimizer step (and per rollout): memory, not math
    num_generations: int = 4
    max_completion_length: int = 128
    temperature: float = 1.0
    learning_rate: float = 1e-5
    beta: float = 0.0
    loss_type: str = "dapo"
    lora: bool = True
    lora_r: int = 8
    save_steps: int = 25
    max_searches: int = TRAIN_MAX_SEARCHES
    top_k: int = LoopOptions().top_k
    seed: int = 0
    rollout_engine: RolloutEngineKind = field(default_factory=default_rollout_engine)
    vllm_dtype: str = "float32"
    vllm_server_url: str | None = None
    vllm_gpu_memory_utilization: float = 0.3


def reward_params(settings: GRPOSettings) -> dict[str, Any]:
    return {"tau": settings.tau} if settings.reward in ("sem", "ikea") else {}


class JSONLLogger(TrainerCallback):
    """Appends every log record (reward parts, search counts, loss, and `extra()`'s totals) to a JSONL file."""

    def __init__(self, path: Path, extra: Callable[[], dict[str, Any]] | None = None) -> None:
        self.path = path
        self.extra = extra or dict
        self.started = time.perf_counter()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs:
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
    model_path: str, examples: list[Example], retriever: CachedSearch, output_dir: Path, settings: GRPOSettings
) -> tuple[Any, SEMRollout]:
    """The TRL trainer and its rollout (close the rollout when done: it may hold a vLLM engine)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig

    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rows = [
        {"prompt": ex.prompt_text(), "answers": list(ex.answers), "source": ex.source,
         "choices": list(ex.choices or []), "kind": ex.kind}
        for ex in examples
    ]  # fmt: skip
    funcs, weights = reward_functions(settings.reward, **reward_params(settings))
    args = GRPOConfig(
        output_dir=str(output_dir),
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.gradient_accumulation_steps,
        num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        learning_rate=settings.learning_rate,
        beta=settings.beta,
        loss_type=settings.loss_type,
        reward_weights=weights,
        logging_steps=1,
        save_steps=settings.save_steps,
        save_total_limit=2,
        report_to=[],
        seed=settings.seed,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=False,  # TRL turns it on; a 135M model fits, and it costs 20% a step
        log_completions=False,
    )
    rollout = SEMRollout(
        retriever,
        RolloutConfig(
            max_searches=settings.max_searches, top_k=settings.top_k, engine=settings.rollout_engine,
            vllm_dtype=settings.vllm_dtype, vllm_server_url=settings.vllm_server_url,
            vllm_gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
        ),
    )  # fmt: skip
    peft_config = None
    if is_adapter(model_path):  # an SFT adapter: keep training it, the result stays one adapter over the base
        model = load_trainable(model_path)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        peft_config = lora_config(settings.lora_r) if settings.lora else None
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
    model_path: str,
    examples: list[Example],
    retriever: CachedSearch,
    output_dir: Path,
    settings: GRPOSettings,
    *,
    resume: bool = False,
) -> Path:
    """Train; returns the folder of the final model (a LoRA adapter when `settings.lora`)."""
    from transformers.trainer_utils import get_last_checkpoint

    trainer, rollout = build_grpo_trainer(model_path, examples, retriever, output_dir, settings)
    last = get_last_checkpoint(str(output_dir)) if resume else None
    if resume:
        log.info("resuming from %s", last or "the start (no checkpoint yet)")
    log.info("rollouts on %s", settings.rollout_engine)
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


def merge_adapter(adapter_dir: Path, output_dir: Path) -> Path:
    """Merge a LoRA adapter into its base model: a plain checkpoint the service can load (`SEM_MODEL`)."""
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    model = AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir), dtype=torch.bfloat16)
    merged = model.merge_and_unload()
    merged.save_pretrained(str(output_dir))
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(output_dir))
    return output_dir
