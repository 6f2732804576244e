"""`SEMGRPOConfig`: TRL's GRPOConfig with SEM's fields, as TRL's own configs extend `TrainingArguments`.

Everything TRL has keeps its name and meaning (`per_device_train_batch_size`, `num_generations`, ...); the few
defaults SEM's recipe changes are redeclared below with the reason. TRL's `vllm_server_base_url` and
`vllm_gpu_memory_utilization` say where SEM's own vLLM rollouts run (TRL's `use_vllm` stays off: the rollout brings
its engine). Importing this module imports TRL: the CLI does it lazily.
"""

from __future__ import annotations

import importlib.util
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import torch
from trl import GRPOConfig

from sem.loop import LoopOptions
from trainer.rollout import TRAIN_MAX_SEARCHES


def default_rollout_engine() -> str:
    """vLLM where it is installed, HF `generate` otherwise."""
    return "vllm" if importlib.util.find_spec("vllm") is not None else "hf"


@dataclass
class SEMGRPOConfig(GRPOConfig):
    # SEM's fields
    reward: str = field(default="sem", metadata={"help": "Reward: sem, ikea, otc or em (trainer/rewards.py)."})
    tau: float = field(default=0.8, metadata={"help": "sem/ikea: the score a first answer needs to count as known."})
    lora: bool = field(default=True, metadata={"help": "Train a LoRA adapter, else the whole model."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank (an adapter start model keeps its own)."})
    max_searches: int = field(default=TRAIN_MAX_SEARCHES, metadata={"help": "Search budget of a rollout."})
    top_k: int = field(default=LoopOptions().top_k, metadata={"help": "Passages per search in rollouts."})
    rollout_engine: str = field(
        default_factory=default_rollout_engine,
        metadata={"help": "vllm: a step's answers batched on vLLM, weights pushed each step; hf: transformers."},
    )
    vllm_dtype: str = field(default="float32", metadata={"help": "dtype of the in-process vLLM rollout engine."})

    # TRL's fields whose default SEM's recipe changes
    max_steps: int = 200
    learning_rate: float = 1e-5  # LoRA moves little at TRL's 1e-6 in a CPU-sized run
    per_device_train_batch_size: int = 4
    num_generations: int | None = 4
    max_completion_length: int | None = 128  # the 135M model's answers and one search fit
    logging_steps: float = 1
    save_steps: float = 25
    save_total_limit: int | None = 2
    report_to: Any = "none"
    gradient_checkpointing: bool = False  # a 135M model fits, and checkpointing costs 20% a step
    bf16: bool | None = None  # on where the GPU has it, off on CPUs

    def __post_init__(self) -> None:
        cuda = torch.cuda.is_available()
        if self.bf16 is None:
            self.bf16 = cuda and torch.cuda.is_bf16_supported()
        self.use_cpu = self.use_cpu or not cuda
        if self.rollout_engine not in ("vllm", "hf"):
            raise ValueError(f"rollout_engine must be vllm or hf, not {self.rollout_engine!r}")
        super().__post_init__()

    @property
    def reward_params(self) -> dict[str, Any]:
        return {"tau": self.tau} if self.reward in ("sem", "ikea") else {}

    @classmethod
    def recipe(cls, **given: Any) -> dict[str, Any]:
        """The fields a run is described by (SEM's and the TRL ones the recipe sets), defaults overlaid by `given`,
        without building the config (TRL checks the batch shape against this machine's process count)."""
        defaults = {
            f.name: f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
            for f in fields(cls)
            if f.name in RECIPE_FIELDS
        }
        return {name: given.get(name, defaults[name]) for name in RECIPE_FIELDS}


RECIPE_FIELDS = ("reward", "tau", "lora", "lora_r", "max_searches", "top_k", "rollout_engine", "vllm_dtype",
                 "vllm_server_base_url", "vllm_gpu_memory_utilization", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "num_generations", "max_completion_length", "temperature",
                 "learning_rate", "beta", "loss_type", "save_steps", "seed")  # fmt: skip
