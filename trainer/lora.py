"""The one LoRA shape the recipe trains (SFT, then GRPO on the same adapter), and loading it back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Every linear layer of a Llama-style block: SmolLM2 is too small for attention-only adapters to move much.
TARGET_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_config(r: int) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, task_type="CAUSAL_LM", target_modules=TARGET_MODULES)


def is_adapter(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def base_of(adapter_dir: str | Path) -> str:
    import json

    return json.loads((Path(adapter_dir) / "adapter_config.json").read_text())["base_model_name_or_path"]


def load_trainable(adapter_dir: str | Path, base: str | None = None, dtype: Any = None) -> Any:
    """The base model with the adapter attached and trainable (GRPO continuing the SFT adapter)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base or base_of(adapter_dir), dtype=dtype or torch.float32)
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
