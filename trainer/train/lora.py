"""LoRA adapters: the one shape the recipe trains (SFT, then GRPO on the same adapter), loading one back, merging
one into its base (eval, export), publishing one as the service's default and stamping its card."""

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


def resolve_base(base: str) -> str:
    """Where an adapter's base is on this machine: a local path as it is; the embedded base's public id (what a
    shipped adapter names, `trainer.train.extract.BASE_ID`) as the checkpoint `sem assets` prepared, since nothing is
    downloaded from a hub here."""
    if Path(base).exists():
        return base
    from sem.assets import BASE_MODEL_ID, base_model_dir
    from sem.settings import Settings

    return str(base_model_dir(Settings().home_dir)) if base == BASE_MODEL_ID else base


def base_path(adapter_dir: str | Path) -> str:
    """The adapter's base, where it is on this machine."""
    return resolve_base(base_of(adapter_dir))


def tokenizer_source(model_path: str | Path) -> str:
    """Where a model's tokenizer is: beside it, or for an adapter that carries none (a shipped one), its base's."""
    path = Path(model_path)
    if is_adapter(path) and not (path / "tokenizer_config.json").is_file():
        return base_path(path)
    return str(model_path)


def load_trainable(adapter_dir: str | Path, base: str | None = None, dtype: Any = None) -> Any:
    """The base model with the adapter attached and trainable (GRPO continuing the SFT adapter)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    start = base or base_path(adapter_dir)
    model = AutoModelForCausalLM.from_pretrained(start, dtype=dtype or torch.float32)
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)


def publish_adapter(adapter_dir: str | Path, out_dir: str | Path, base_id: str, gate: Path | None = None) -> Path:
    """Copy a trained adapter where `sem assets` merges it from: weights in bf16 (half the bytes; the merge is
    into a bf16 checkpoint anyway), the base recorded by its public id instead of this machine's path, and its
    gate calibration when given (`trainer calibrate` on the merged model; installed beside the merged weights)."""
    import json
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from sem.gate import GATE_FILE

    src, out = Path(adapter_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = load_file(src / "adapter_model.safetensors")
    save_file({k: v.to(torch.bfloat16) for k, v in tensors.items()}, out / "adapter_model.safetensors",
              metadata={"format": "pt"})  # fmt: skip
    config = json.loads((src / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_id
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if gate is not None:
        shutil.copyfile(gate, out / GATE_FILE)
    else:  # a stale calibration belongs to the adapter it was made for
        (out / GATE_FILE).unlink(missing_ok=True)
    return out


PROVENANCE = "## Provenance"


def stamp_card(adapter_dir: Path, text: str) -> None:
    """Say in the adapter's model card (README.md) how it became the default: its `## Provenance` section is replaced
    (or added), the rest of the card kept."""
    card = Path(adapter_dir) / "README.md"
    body = card.read_text() if card.is_file() else ""
    head = body.split(PROVENANCE, 1)[0].rstrip()
    card.write_text((head + "\n\n" if head else "") + f"{PROVENANCE}\n\n{text}\n")


def merge_adapter(adapter_dir: Path, output_dir: Path) -> Path:
    """Merge a LoRA adapter into its base model: a plain checkpoint the service can load (`SEM_MODEL`), with the
    adapter's gate calibration (`trainer calibrate --model <adapter>`) beside it."""
    import shutil

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sem.gate import gate_path

    # Merged in float32, saved in bf16: one rounding, not one per factor.
    base = AutoModelForCausalLM.from_pretrained(base_path(adapter_dir), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload().to(torch.bfloat16)
    merged.save_pretrained(str(output_dir))
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(adapter_dir))
    tokenizer.save_pretrained(str(output_dir))
    if gate_path(adapter_dir).is_file():
        shutil.copyfile(gate_path(adapter_dir), gate_path(output_dir))
    return output_dir
