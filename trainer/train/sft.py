"""SFT warm-up: teach a small model the template before GRPO (a model that never writes the tags gets no
gradient from the reward).

Traces are written by replaying a teacher's text through the real `SearchLoop` with the real retriever, so the
warm-up data has exactly the served format: the `<result>` blocks are real search results, and they are masked
out of the loss (label -100) just as the loop's loss mask says.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from sem.cache import CachedSearch
from sem.engines.replay import ReplayEngine
from sem.loop import LoopOptions, SearchLoop, SearchPolicy, Trace
from sem.protocol import ANSWER_CLOSE, format_result
from sem.trace import require_one_context
from trainer.data import Example
from trainer.evals.labels import KNOWN, Label, found_in, is_right
from trainer.train.lora import lora_config

if TYPE_CHECKING:  # importing the config imports TRL: only the training run needs it
    from trainer.train.config import SEMSFTConfig

log = logging.getLogger(__name__)
IGNORE = -100


def first_attempt(label: Label) -> str | None:
    """The sampled closed-book answer to teach as the first answer: a right one where it has one, else its most
    frequent attempt. An empty answer or the question asked back ("Who wrote Papa?") is no attempt; None if all are.

    >>> ex = Example("p", "Who wrote Papa?", ("Whitfield",), "needs_search", "t")
    >>> first_attempt(Label(ex, "train", ["Who wrote Papa?", "Strong", "Marvin", "Strong"], [], 0.0, 0.0, "neither"))
    'Strong'
    >>> first_attempt(Label(ex, "train", ["Who wrote Papa?", " "], [], 0.0, 0.0, "neither")) is None
    True
    """
    attempts = [a for a in label.closed if a.strip() and not a.strip().endswith("?")]
    right = [a for a in attempts if is_right(a, label.example)]
    ranked = Counter(right or attempts).most_common(1)
    return ranked[0][0] if ranked else None


def answer_after_search(label: Label, results: str) -> str | None:
    """The answer to teach after a search: a right one the model gave after a search, else the gold where the
    inserted `results` hold it; None where they do not (a gold from nowhere would teach answering past the search,
    not reading it, so there is nothing to teach).

    >>> ex = Example("p", "Capital of Zubrowka?", ("Lutz",), "needs_search", "t")
    >>> lab = Label(ex, "train", ["Paris", "Paris"], ["Paris"], 0.0, 0.0, "neither")
    >>> answer_after_search(lab, "[1] The capital of Zubrowka is Lutz."), answer_after_search(lab, "[1] Nothing.")
    ('Lutz', None)
    """
    searched_right = [a for a in label.searched if is_right(a, label.example)]
    return searched_right[0] if searched_right else found_in(results, label.example)


def search_query(example: Example) -> str:
    """What a teacher trace searches: the question on one line."""
    return " ".join(example.question.split())


def teacher_replies_from_label(label: Label, after: str | None = None) -> list[str]:
    """The model's own attempt first, and its label decides whether a search follows (EVALUATION.md).

    Known: one of its right closed-book answers, and it stops. Otherwise: its own (wrong) closed-book attempt, the
    question searched, then `after` (`answer_after_search`; where that is None, its attempt again, which
    `teacher_trace` leaves out of the loss). No fixed thought, no placeholder answer: what the gate learns to read
    is its own attempt, not the question's form. A question with no attempt among its samples has no teacher trace
    (an empty list).
    """
    first = first_attempt(label)
    if first is None:
        return []
    if label.klass == KNOWN:
        return [f"<answer>{first}</answer>"]
    query = search_query(label.example)
    return [f"<answer>{first}</answer>\n<search> {query} </search>", f"<answer>{after or first}</answer>"]


async def teacher_trace(
    example: Example, tokenizer: Any, retriever: CachedSearch, label: Label, top_k: int = 3
) -> Trace:
    """One SFT trace through the real loop, written from the model's own labelled attempts (no canned strings)."""
    options = LoopOptions(
        policy=SearchPolicy.auto,
        max_searches=1,
        top_k=top_k,
        max_tokens=4096,
        force_answer=False,
        passage_chars=300,
    )
    # what the loop's search will insert (the same cached retrieval) decides the answer after it
    (found,) = await retriever.retrieve([search_query(example)], top_k, options.search_mode)
    after = answer_after_search(label, format_result(found.passages, max_chars=options.passage_chars))
    engine = ReplayEngine(tokenizer, teacher_replies_from_label(label, after), "teacher")
    trace = await SearchLoop(engine, retriever).run(example.prompt_text(), options)
    if trace.searches and after is None:
        _untrain_tail(trace)
    return trace


def _untrain_tail(trace: Trace) -> None:
    """Leave what follows the last inserted block (the answer after an unhelpful search) out of the loss."""
    last_inserted = max((i for i, keep in enumerate(trace.loss_mask) if not keep), default=-1)
    trace.loss_mask[last_inserted + 1 :] = [0] * (len(trace.loss_mask) - last_inserted - 1)


def sft_row(trace: Trace, eos_id: int | None) -> dict[str, list[int]]:
    """input_ids and labels: the prompt and inserted results are not trained on; a final EOS is, after a trained
    answer (an answer left out of the loss leaves its EOS out too)."""
    ids = trace.prompt_ids + require_one_context(trace).completion_ids
    labels = [IGNORE] * len(trace.prompt_ids) + [
        tok if keep else IGNORE for tok, keep in zip(trace.completion_ids, trace.loss_mask, strict=True)
    ]
    if eos_id is not None and (not ids or ids[-1] != eos_id):
        ids.append(eos_id)
        labels.append(eos_id if trace.loss_mask and trace.loss_mask[-1] else IGNORE)
    return {"input_ids": ids, "labels": labels}


def build_sft_rows(labels: list[Label], tokenizer: Any, retriever: CachedSearch) -> list[dict[str, list[int]]]:
    """One trace per labelled question with an attempt among its samples (the others have nothing to teach)."""
    teachable = [lab for lab in labels if first_attempt(lab) is not None]
    if len(teachable) < len(labels):
        log.info("sft: %d questions left out, no attempt among their samples", len(labels) - len(teachable))

    async def build() -> list[Trace]:
        return [await teacher_trace(lab.example, tokenizer, retriever, lab)
                for lab in tqdm(teachable, desc="sft traces")]  # fmt: skip

    traces = asyncio.run(build())
    return [sft_row(t, tokenizer.eos_token_id) for t in traces]


def run_sft(
    model_path: str, labels: list[Label], retriever: CachedSearch, args: SEMSFTConfig, *, resume: bool = False
) -> Path:
    """Fine-tune briefly on teacher traces; returns the folder of the final checkpoint.

    With `args.lora_r`, a LoRA adapter is trained instead of the full model; GRPO then keeps training that same
    adapter, so the whole recipe's result is one small adapter over the untouched base.
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.trainer_utils import get_last_checkpoint

    from trainer.train.decision import DecisionWeightedSFTTrainer
    from trainer.train.lora import tokenizer_source

    output_dir = Path(args.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source(model_path))  # a shipped adapter carries none
    rows = build_sft_rows(labels, tokenizer, retriever)
    log.info("sft: %d traces, %d tokens trained", len(rows), sum(sum(x != IGNORE for x in r["labels"]) for r in rows))
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    trainer = DecisionWeightedSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(args.lora_r) if args.lora_r else None,
        close_ids=tokenizer.encode(ANSWER_CLOSE, add_special_tokens=False),
    )
    last = get_last_checkpoint(str(output_dir)) if resume and output_dir.is_dir() else None
    trainer.train(resume_from_checkpoint=last)
    final = output_dir / "final"
    trainer.save_model(str(final))
    tokenizer.save_pretrained(str(final))
    return final
