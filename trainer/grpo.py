"""GRPO with TRL: the policy answers through `sem.loop` (rollout), scored by a search-efficiency reward."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from sem.cache import CachedSearch
from trainer.data import Example
from trainer.lora import is_adapter, load_trainable, lora_config
from trainer.rewards import reward_functions
from trainer.rollout import RolloutConfig, SEMRollout

log = logging.getLogger(__name__)


@dataclass
class GRPOSettings:
    """SEM's knobs on top of TRL's GRPOConfig (the rest keep TRL's defaults)."""

    reward: str = "sem"
    tau: float = 0.8
    max_steps: int = 200
    batch_size: int = 4  # prompts x generations per device step must divide by num_generations
    num_generations: int = 4
    max_completion_length: int = 128
    temperature: float = 1.0
    learning_rate: float = 1e-5
    beta: float = 0.0
    loss_type: str = "dapo"
    lora: bool = True
    lora_r: int = 8
    save_steps: int = 25
    max_searches: int = 2
    top_k: int = 3
    seed: int = 0


def reward_params(settings: GRPOSettings) -> dict[str, Any]:
    return {"tau": settings.tau} if settings.reward in ("sem", "ikea") else {}


class JSONLLogger(TrainerCallback):
    """Appends every log record (reward parts, search counts, loss) to a JSONL file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.started = time.perf_counter()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not logs:
            return
        record = {"step": state.global_step, "elapsed_s": round(time.perf_counter() - self.started, 1), **logs}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


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
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_utils import get_last_checkpoint
    from trl import GRPOConfig, GRPOTrainer

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
        bf16=False,
        use_cpu=not torch.cuda.is_available(),
        gradient_checkpointing=False,  # TRL turns it on; a 135M model fits, and it costs 20% a step
        log_completions=False,
    )
    rollout = SEMRollout(retriever, RolloutConfig(max_searches=settings.max_searches, top_k=settings.top_k))
    peft_config = None
    if is_adapter(model_path):  # an SFT adapter: keep training it, the result stays one adapter over the base
        model = load_trainable(model_path)
    else:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        peft_config = lora_config(settings.lora_r) if settings.lora else None
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        rollout_func=rollout,
        callbacks=[JSONLLogger(output_dir / "log.jsonl")],
    )
    last = get_last_checkpoint(str(output_dir)) if resume else None
    if resume:
        log.info("resuming from %s", last or "the start (no checkpoint yet)")
    trainer.train(resume_from_checkpoint=last)
    final = output_dir / "final"
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
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
