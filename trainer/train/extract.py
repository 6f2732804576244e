"""A low-rank extract of a fine-tune: what a full fine-tune (or a chain of them) changed in each linear layer, cut by
SVD and written as one LoRA adapter on the start model, so a model taught by full fine-tuning ships and serves like
any adapter (`SEM_ADAPTERS`, issue #42).

The best rank-r approximation of a layer's change (Eckart-Young) is `U_r S_r V_r^T`, written as
`lora_B = U_r sqrt(S_r)`, `lora_A = sqrt(S_r) V_r^T` with alpha = r (scale 1). Ranks differ by layer: under a size
budget, singular directions are taken across all layers by energy per parameter (`s^2 / (m + n)`), the allocation
that loses the least of the change for the bytes (per-layer ranks: PEFT's and vLLM's `rank_pattern`). What a LoRA
cannot carry, the embeddings' and the norms' changes, stays at the start model's; `trainer.world.distill` trains
the adapter to match the full model's distributions where it was taught, which wins back what the cut lost.

On the world's SFT model (SmolLM2-135M), closed-book taught facts (greedy, 60 questions): the full model 1.0; a
uniform rank 64 (39 MB) 0.78; the same bytes by energy 0.88; the embeddings alone at the base's 0.98.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sem.assets import BASE_MODEL_ID
from trainer.train.lora import TARGET_MODULES

log = logging.getLogger("trainer.extract")

KEEP_SINGULAR = 512  # directions kept per layer before allocation (more than any budget here gives one layer)


@dataclass(slots=True)
class ExtractReport:
    """How much of the change the adapter keeps: squared Frobenius norms, summed over the layers."""

    parameters: int = 0
    ranks: dict[str, list[int]] = field(default_factory=dict)  # per kind of layer: min, mean, max
    kept_energy: float = 0.0  # of the linear layers' change, the share the extract keeps
    linear_norm: float = 0.0  # the linear layers' change, Frobenius
    dropped: dict[str, float] = field(default_factory=dict)  # what no LoRA carries: embeddings, norms (Frobenius)
    distill: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_full(model: str, dtype: Any = None) -> Any:
    """A checkpoint (float32 by default); an adapter merged into its base first, in float32 (no rounding before the
    SVD)."""
    import torch
    from transformers import AutoModelForCausalLM

    from trainer.train.lora import base_path, is_adapter

    if not is_adapter(model):
        return AutoModelForCausalLM.from_pretrained(model, dtype=dtype or torch.float32)
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(base_path(model), dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, model).merge_and_unload()
    return merged.to(dtype) if dtype else merged


def allocate(spectra: dict[str, tuple[Any, int]], budget: int) -> dict[str, int]:
    """Ranks per layer within `budget` parameters: the singular directions with the most energy per parameter
    first. `spectra`: layer -> (singular values, parameters one direction costs). Every layer gets at least one.

    >>> import torch
    >>> allocate({"a": (torch.tensor([3.0, 2.0, 0.1]), 2), "b": (torch.tensor([1.0, 0.5]), 2)}, budget=6)
    {'a': 2, 'b': 1}
    """
    ranks = dict.fromkeys(spectra, 1)
    used = sum(cost for _, cost in spectra.values())
    candidates = sorted(((float(s[i]) ** 2 / cost, name, i) for name, (s, cost) in spectra.items()
                         for i in range(1, len(s))), reverse=True)  # fmt: skip
    for _, name, i in candidates:
        cost = spectra[name][1]
        if used + cost > budget:
            break
        ranks[name], used = max(ranks[name], i + 1), used + cost
    return ranks


def extract_adapter(start: str, tuned: str, out: Path, *, budget_mb: float = 39.0, rank: int | None = None) -> Any:
    """`out/`: an adapter over `start` holding `tuned` - `start` in every block's linear layers, in bf16, within
    `budget_mb` (or at one `rank` everywhere), with extract.json saying what it keeps. Returns (report, adapter
    weights in float32 by PEFT name, PEFT config)."""
    import torch

    base, full = load_full(start).state_dict(), load_full(tuned).state_dict()
    report, factors, spectra, energy, norm2 = ExtractReport(), {}, {}, 0.0, 0.0
    for name, weight in full.items():
        delta = weight.float() - base[name].float()
        module = name.rsplit(".", 2)[-2] if name.endswith(".weight") else ""
        if module not in TARGET_MODULES or delta.ndim != 2:
            moved = float(delta.norm())
            if moved and not name.startswith("lm_head"):  # a tied head is the embeddings again
                report.dropped[name] = round(moved, 4)
            continue
        u, s, vh = torch.linalg.svd(delta, full_matrices=False)
        factors[name] = (u[:, :KEEP_SINGULAR], s[:KEEP_SINGULAR], vh[:KEEP_SINGULAR])
        spectra[name] = (s[:KEEP_SINGULAR], delta.shape[0] + delta.shape[1])
        norm2 += float((s**2).sum())
    ranks = {n: rank for n in spectra} if rank else allocate(spectra, int(budget_mb * 1e6 / 2))  # bf16: 2 bytes
    tensors: dict[str, Any] = {}
    for name, (u, s, vh) in factors.items():
        r, root = ranks[name], s[: ranks[name]].sqrt()
        prefix = "base_model.model." + name.removesuffix(".weight")
        tensors[f"{prefix}.lora_A.weight"] = (root[:, None] * vh[:r]).contiguous()
        tensors[f"{prefix}.lora_B.weight"] = (u[:, :r] * root).contiguous()
        energy += float((s[:r] ** 2).sum())
        report.parameters += r * spectra[name][1]
    report.kept_energy, report.linear_norm = round(energy / norm2, 4), round(norm2**0.5, 4)
    for module in TARGET_MODULES:
        got = [r for n, r in ranks.items() if n.rsplit(".", 2)[-2] == module]
        report.ranks[module] = [min(got), round(sum(got) / len(got)), max(got)]
    pattern = {n.removesuffix(".weight"): r for n, r in ranks.items()}
    config = _config(max(ranks.values()), pattern)
    save_adapter(out, tensors, config, tuned)
    write_report(out, start, tuned, report)
    log.info("%d parameters in %s, %.1f%% of the change's energy kept", report.parameters, out,
             100 * report.kept_energy)  # fmt: skip
    return report, tensors, config


def _config(rank: int, pattern: dict[str, int]) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=rank, rank_pattern=pattern, alpha_pattern=dict(pattern), lora_dropout=0.0,
                      task_type="CAUSAL_LM", target_modules=TARGET_MODULES,
                      base_model_name_or_path=BASE_MODEL_ID)  # fmt: skip


def save_adapter(out: Path, tensors: dict[str, Any], config: Any, tokenizer_from: str) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()}, out / "adapter_model.safetensors",
              metadata={"format": "pt"})  # fmt: skip
    config.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(str(out))


def write_report(out: Path, start: str, tuned: str, report: ExtractReport) -> None:
    text = json.dumps({"start": start, "tuned": tuned, **report.as_dict()}, indent=2)
    (out / "extract.json").write_text(text + "\n")
