"""`SEMGRPOConfig`: TRL's GRPOConfig with SEM's fields, as TRL's own configs extend `TrainingArguments`.

Everything TRL has keeps its name and meaning (`per_device_train_batch_size`, `num_generations`, ...); the few
defaults SEM's recipe changes are redeclared below with the reason. TRL's `vllm_server_base_url` and
`vllm_gpu_memory_utilization` say where SEM's own vLLM rollouts run (TRL's `use_vllm` stays off: the rollout brings
its engine). Importing this module imports TRL: the CLI does it lazily.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import torch
from trl import GRPOConfig, SFTConfig

from sem.loop import LoopOptions
from trainer.train.rollout import TRAIN_MAX_SEARCHES


def default_rollout_engine() -> str:
    """vLLM where it is installed, HF `generate` otherwise."""
    return "vllm" if importlib.util.find_spec("vllm") is not None else "hf"


REWARDS = ("sem", "ikea", "otc", "em")


def fit_to_device(config: Any) -> None:
    """bf16 (mixed precision: float32 weights) where the hardware computes in it, unless set (sem.hardware: a GPU
    with bf16, an x86 CPU with AVX512-BF16 or AMX); the CPU where there is no GPU."""
    from sem.hardware import computes_bf16

    cuda = torch.cuda.is_available()
    if config.bf16 is None:
        config.bf16 = computes_bf16("cuda" if cuda else "cpu")
    config.use_cpu = config.use_cpu or not cuda


def check_choices(reward: str, rollout_engine: str) -> None:
    """The fields with a fixed set of values (checked for `--dry-run` too, which builds no config)."""
    if rollout_engine not in ("vllm", "hf"):
        raise ValueError(f"rollout_engine must be vllm or hf, not {rollout_engine!r}")
    if reward not in REWARDS:
        raise ValueError(f"reward must be one of {', '.join(REWARDS)}, not {reward!r}")


@dataclass
class SEMGRPOConfig(GRPOConfig):
    # SEM's fields
    reward: str = field(default="sem", metadata={"help": "Reward: sem, ikea, otc or em (trainer/train/rewards.py)."})
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

    # TRL's fields whose default SEM's recipe changes (or that get a shorter name on the command line)
    max_steps: int = 200
    learning_rate: float = 1e-5  # LoRA moves little at TRL's 1e-6 in a CPU-sized run
    per_device_train_batch_size: int = field(
        default=4, metadata={"aliases": ["--batch-size"], "help": "Answers per micro-batch and process."}
    )
    vllm_server_base_url: str | None = field(
        default=None,
        metadata={"aliases": ["--vllm-server-url"], "help": "Roll out on this `vllm serve` (deploy/README.md)."},
    )
    num_generations: int | None = 4
    max_completion_length: int | None = 128  # the 135M model's answers and one search fit
    logging_steps: float = 1
    save_steps: float = 25
    save_total_limit: int | None = 2
    gradient_checkpointing: bool = False  # a 135M model fits, and checkpointing costs 20% a step
    bf16: bool | None = None  # on where the hardware computes in bf16 (sem.hardware), else off

    def __post_init__(self) -> None:
        fit_to_device(self)
        check_choices(self.reward, self.rollout_engine)
        super().__post_init__()

    @property
    def reward_params(self) -> dict[str, Any]:
        return {"tau": self.tau} if self.reward in ("sem", "ikea") else {}

    RECIPE_FIELDS: ClassVar[tuple[str, ...]] = (
        "reward", "tau", "lora", "lora_r", "max_searches", "top_k", "rollout_engine", "vllm_dtype",
        "vllm_server_base_url", "vllm_gpu_memory_utilization", "max_steps", "per_device_train_batch_size",
        "gradient_accumulation_steps", "num_generations", "max_completion_length", "temperature", "learning_rate",
        "beta", "loss_type", "save_steps", "seed", "gradient_checkpointing",
    )  # fmt: skip  # what a run is described by (`--dry-run`, deploy's checks)


# The YAML keys that name a field by its command-line alias
YAML_ALIASES = {"batch_size": "per_device_train_batch_size", "vllm_server_url": "vllm_server_base_url"}


def parse_config(
    cls: type, args: list[str], defaults: dict[str, Any], *, command: str, print_help: bool = False
) -> dict[str, Any] | None:
    """A config dataclass's fields from command-line `args` over `defaults` (a YAML section) over the dataclass's own
    defaults, the way TRL's scripts parse theirs (transformers' HfArgumentParser), without building the config:
    TRL's checks run against this machine's processes, which `--dry-run` must not. None after printing help."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(cls, prog=f"trainer {command} [OPTIONS]")
    if print_help:
        parser.print_help()
        return None
    names = {f.name for f in fields(cls) if f.init}
    given = {YAML_ALIASES.get(k, k): v for k, v in defaults.items()}
    unknown = set(given) - names
    if unknown:
        raise ValueError(f"unknown {command} fields {sorted(unknown)}; `trainer {command} --config-help` lists them")
    parser.set_defaults(**given)
    namespace, rest = parser.parse_known_args(args)
    if rest:
        raise ValueError(f"unknown options {rest}; `trainer {command} --config-help` lists them")
    if cls is SEMGRPOConfig:
        check_choices(namespace.reward, namespace.rollout_engine)
    return {k: v for k, v in vars(namespace).items() if k in names and k != "output_dir"}


@dataclass
class SEMSFTConfig(SFTConfig):
    """TRL's SFTConfig with the warm-up's defaults: a short LoRA run over the teacher traces."""

    lora_r: int = field(default=8, metadata={"help": "LoRA rank; 0 fine-tunes the whole model."})
    decision_weight: float = field(
        default=1.0,
        metadata={
            "help": "Loss weight of the token after the first </answer> (stop or search: the gate's decision; "
            "one token among ~15 a trace trains). 1 trains it like any other."
        },
    )
    max_steps: int = 60
    per_device_train_batch_size: int = field(
        default=4, metadata={"aliases": ["--batch-size"], "help": "Traces per micro-batch and process."}
    )
    learning_rate: float = 5e-5
    logging_steps: float = 5
    save_steps: float = 50
    save_total_limit: int | None = 2
    seed: int = 0
    gradient_checkpointing: bool = False  # TRL turns it on; a 135M model fits, and it costs 20% a step
    max_length: int | None = 1024
    bf16: bool | None = None  # on where the hardware computes in bf16 (sem.hardware), else off

    def __post_init__(self) -> None:
        fit_to_device(self)
        super().__post_init__()
