"""Distillation of an extracted adapter (trainer.train.extract) back towards the model it was cut from, on the
world's teaching pieces and the model's own loop traces: what wins back the facts and the reading that the cut lost
(issue #42)."""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sem.trace import require_one_context
from trainer.train.extract import ExtractReport, load_full, write_report
from trainer.world.teach import Piece, batches, collate

log = logging.getLogger("trainer.extract")


def distill(out: Path, start: str, tuned: str, pieces: Sequence[Any], prefix: Sequence[int], report: ExtractReport,
            *, epochs: int = 1, learning_rate: float = 2e-4, batch_size: int = 32, max_tokens: int = 4096,
            seed: int = 0) -> ExtractReport:  # fmt: skip
    """Train the extracted adapter in `out/` to match `tuned`'s next-token distributions (KL, teacher first) on the
    completion tokens of `pieces` (trainer.world.teach's: the facts as taught), the start model frozen; saved back
    in place. The full model is the teacher, so what it is unsure of stays unsure: its confidence is the gate."""
    import torch
    import torch.nn.functional as F
    from peft import PeftModel
    from transformers import AutoTokenizer

    from sem.hardware import computes_bf16

    torch.manual_seed(seed)
    teacher = load_full(tuned).eval()
    student = PeftModel.from_pretrained(load_full(start), str(out), is_trainable=True)
    inner = student.get_base_model()
    pad = AutoTokenizer.from_pretrained(str(out)).pad_token_id or 0
    bf16 = computes_bf16("cpu")
    trainable = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.0)
    rng, began, losses = random.Random(seed), time.perf_counter(), []
    plan = [part for _ in range(epochs) for b in batches(pieces, batch_size, rng) for part in _fit(b, max_tokens)]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / len(plan))
    for n, batch in enumerate(plan):
        ids, mask, target = collate(batch, pad)
        shared = prefix if batch[0].shared else ()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            want = F.log_softmax(_completion_logits(teacher, ids, mask, target, shared).float(), dim=-1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            got = F.log_softmax(_completion_logits(inner, ids, mask, target, shared).float(), dim=-1)
        loss = F.kl_div(got, want, log_target=True, reduction="batchmean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if n % 20 == 0:
            log.info("distill step %d/%d: KL %.4f", n, len(plan), losses[-1])
    named = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    student.save_pretrained(str(out))
    _to_bf16(out)
    config = json.loads((out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = named  # PEFT wrote this machine's path; the adapter names its base's id
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    report.distill = {"steps": len(plan), "epochs": epochs, "learning_rate": learning_rate, "sequences": len(pieces),
                      "kl_first": round(losses[0], 4), "kl_last_20": round(sum(losses[-20:]) / len(losses[-20:]), 4),
                      "seconds": round(time.perf_counter() - began)}  # fmt: skip
    write_report(out, start, tuned, report)
    return report


def _fit(batch: list[Any], max_tokens: int) -> list[list[Any]]:
    """A batch cut so no part holds more than `max_tokens` padded tokens: a trace with its passages is ~10x a
    taught fact, and 32 of them held 20 GB of activations."""
    width = max(len(p.prompt) + len(p.completion) for p in batch)
    rows = max(1, max_tokens // width)
    return [batch[i : i + rows] for i in range(0, len(batch), rows)]


def trace_pieces(traces: Sequence[Any]) -> list[Any]:
    """The teacher's own loop traces as distillation pieces: each stretch it generated (`loss_mask` 1: the first
    answer, the search call, the answer after reading), predicted from everything before it, inserted results
    included. The facts alone leave reading a passage to what the cut kept."""
    pieces = []
    for trace in traces:
        ids, mask, at = require_one_context(trace).completion_ids, trace.loss_mask, 0
        while at < len(ids):
            if not mask[at]:
                at += 1
                continue
            end = at
            while end < len(ids) and mask[end]:
                end += 1
            pieces.append(Piece(list(trace.prompt_ids) + ids[:at], ids[at:end]))
            at = end
    return pieces


def _completion_logits(model: Any, ids: Any, mask: Any, target: Any, prefix: Sequence[int]) -> Any:
    """The logits at the positions that predict a completion token (a causal LM's inner model and head), with the
    shared prefix run once as a key-value cache as teaching does."""
    import torch

    if prefix:
        with torch.no_grad():
            cache = model.model(input_ids=torch.tensor([list(prefix)]), use_cache=True).past_key_values
        cache.batch_repeat_interleave(ids.shape[0])
        n = len(prefix)
        mask = torch.cat([torch.ones((ids.shape[0], n), dtype=mask.dtype), mask], dim=1)
        positions = torch.arange(n, n + ids.shape[1]).expand(ids.shape[0], -1)
        hidden = model.model(input_ids=ids, attention_mask=mask, past_key_values=cache, position_ids=positions,
                             use_cache=True).last_hidden_state  # fmt: skip
    else:
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    return model.lm_head(hidden[target != -100])


def _to_bf16(out: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    path = out / "adapter_model.safetensors"
    tensors = load_file(path)
    save_file({k: v.to(torch.bfloat16) for k, v in tensors.items()}, path, metadata={"format": "pt"})
