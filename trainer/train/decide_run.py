"""A `trainer decide` run: the policy loaded (LoRA or every weight), a corpus without the test split's passages, the
steps with their dev curve every `eval_every`, checkpoints to resume from, and the curve as a table and a plot."""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.evals.labels import Label, read_labels
from trainer.train.decide import (
    DecideConfig,
    Decider,
    DevAnswer,
    batches,
    last_checkpoint,
    mark_gate,
    save_state,
    summary_row,
)
from trainer.train.lora import tokenizer_source

log = logging.getLogger(__name__)
Judge = Callable[[list[DevAnswer], list[str]], dict[str, Any]]  # dev answers and their forms -> a curve point


def answer_form(lab: Label) -> str:
    """What kind of answer the question wants: a year or a name (a decision should not follow this)."""
    return "year" if lab.example.answers[0].strip().isdigit() else "name"


def load_policy(model_path: str, config: DecideConfig, checkpoint: Path | None) -> Any:
    """The trainable policy: a LoRA adapter kept training (a new one on a plain model), or every weight (`full`:
    an adapter merged first); from `checkpoint` when resuming."""
    import torch
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from trainer.train.lora import base_path, is_adapter, load_trainable, lora_config

    source = str(checkpoint) if checkpoint else model_path
    if is_adapter(source):
        if not config.full:
            return load_trainable(source)
        base = AutoModelForCausalLM.from_pretrained(base_path(source), dtype=torch.float32)
        # PEFT loads an adapter for inference, its base frozen: merged, every weight trains
        return PeftModel.from_pretrained(base, source).merge_and_unload().requires_grad_(True)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    return model if config.full else get_peft_model(model, lora_config(config.lora_r))


def rollout_dtype(config: DecideConfig) -> str:
    """The rollout engine's dtype: `engine_dtype`, `auto` resolved by what the CPU computes in (sem.hardware)."""
    import torch

    from sem.hardware import resolve_dtype

    on_cpu = not torch.cuda.is_available()
    chosen = resolve_dtype(config.engine_dtype, on_cpu=on_cpu)
    return "bfloat16" if chosen == "auto" and on_cpu else chosen


def engine_model(model_path: str) -> str:
    """A full checkpoint with the policy's architecture and tokenizer, for vLLM to start from (weights follow)."""
    from trainer.train.lora import base_path, is_adapter

    return base_path(model_path) if is_adapter(model_path) else model_path


def run_decide(model_path: str, labels_file: Path, out: Path, config: DecideConfig, *, searcher: Callable[[], Any],
               judge: Judge, resume: bool = True) -> Path:  # fmt: skip
    """Train until `steps` or until the dev AUROC (`judge`'s "auroc") has not improved for `patience` steps; returns
    out/final. `searcher` builds the loop's search (over the labels' corpus less the test
    passages: trainer.runtime.labels_training_corpus)."""
    import torch
    from transformers import AutoTokenizer

    began = time.perf_counter()
    torch.manual_seed(config.seed)
    out.mkdir(parents=True, exist_ok=True)
    labels = read_labels(labels_file)
    train = [lab for lab in labels if lab.split == "train"]
    dev = sorted((lab for lab in labels if lab.split == "dev"), key=lambda lab: lab.example.id)
    if config.dev_questions and len(dev) > config.dev_questions:
        dev = random.Random(config.seed).sample(dev, config.dev_questions)
    checkpoint = last_checkpoint(out) if resume else None
    history: list[dict[str, Any]] = []
    start = 0
    if checkpoint:
        start = int(checkpoint.name.split("-")[1])
        history = [r for r in json.loads((out / "history.json").read_text()) if r["step"] <= start]
        log.info("decide: resuming after step %d (%s)", start, checkpoint)
    (out / "config.json").write_text(json.dumps({**config.__dict__, "model": model_path,
                                                 "labels": str(labels_file)}, indent=2) + "\n")  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(model_path))  # a shipped adapter carries none
    model = load_policy(model_path, config, checkpoint)
    model.train()
    search = searcher()
    forms = [answer_form(lab) for lab in dev]
    engine = None
    if config.engine == "vllm":
        from trainer.train.vllm_rollout import RolloutEngine

        engine = RolloutEngine(engine_model(model_path), dtype=rollout_dtype(config), seed=config.seed,
                               block_size=config.engine_block_size or None,
                               max_num_seqs=max(64, config.questions * config.generations))  # fmt: skip
    try:
        decider = Decider(model, tokenizer, search, config, engine)
        if checkpoint:
            state = torch.load(checkpoint / "state.pt", weights_only=False)
            decider.optimizer.load_state_dict(state["optimizer"])
        best = max((r["dev_auroc"] or 0.0 for r in history if r.get("dev_auroc") is not None), default=-1.0)
        best_step = max((r["step"] for r in history if r.get("dev_auroc") == best), default=start)
        if not history:
            curve = judge(decider.answer_dev(dev), forms)
            history.append({"step": 0, **{f"dev_{k}": v for k, v in curve.items()}})
            best, best_step = curve["auroc"] or 0.0, 0
            log.info("decide: step 0 dev %s", _brief(curve))
        for step in range(start + 1, config.steps + 1):
            stats = decider.step(step, batches(train, config, step - 1))
            curve = judge(decider.answer_dev(dev), forms) if step % config.eval_every == 0 else None
            history.append(summary_row(stats, curve))
            with (out / "log.jsonl").open("a") as f:
                f.write(json.dumps(history[-1]) + "\n")
            log.info("decide: step %d reward %.3f searched %.2f loss %.4f (%.1f s: rollouts %.1f, branches %.1f, "
                     "forward %.1f, backward %.1f, push %.1f)%s", step, stats.reward, stats.searched, stats.loss,
                     stats.step_s, stats.rollout_s, stats.branch_s, stats.forward_s, stats.backward_s, stats.push_s,
                     f" dev {_brief(curve)}" if curve else "")  # fmt: skip
            if curve and (curve["auroc"] or 0.0) > best:
                best, best_step = curve["auroc"] or 0.0, step
                _replace(save_state(decider, out, step, history), out / "best")
            if step % config.save_every == 0 or step == config.steps:
                save_state(decider, out, step, history)
            if config.max_minutes and time.perf_counter() - began > 60 * config.max_minutes:
                log.info("decide: %.0f minutes are up after step %d: stopping (resume with the same command)",
                         config.max_minutes, step)  # fmt: skip
                save_state(decider, out, step, history)
                break
            if curve and step - best_step >= config.patience:
                log.info("decide: dev AUROC has not improved for %d steps (best %.3f at %d): stopping",
                         step - best_step, best, best_step)  # fmt: skip
                save_state(decider, out, step, history)
                break
        final = out / "final"
        model.save_pretrained(final)
        tokenizer.save_pretrained(final)
        mark_gate(final, config)
    finally:
        if engine is not None:
            engine.close()
    (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    return final


def _brief(curve: dict[str, Any]) -> str:
    keys = ("auroc", "over_search", "under_search", "accuracy", "searches", "auroc_form")
    return " ".join(f"{k}={curve.get(k)}" for k in keys)


def _replace(src: Path, dst: Path) -> None:
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
