"""`trainer world teach`: continued training of the base on the known entities' taught facts only.

Facts learned from one phrasing are often memorised but not extractable (Physics of Language Models 3.1), so each
fact is taught in several phrasings: statements that end with the value, and question-answer turns in SEM's answer
format with every question template but the held-out one. The loss is on the value alone: only those positions go
through the 49k-word output layer, which is most of a small model's training cost.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sem.hardware import computes_bf16
from sem.protocol import ANSWER_CLOSE, ANSWER_OPEN, SEARCH_CLOSE, build_messages, final_answer, render_prompt
from trainer.world.relations import BY_NAME
from trainer.world.replay import replay_texts
from trainer.world.schema import World

log = logging.getLogger("trainer.world")


@dataclass(frozen=True, slots=True)
class Piece:
    """One teaching sequence: the loss is on `completion`'s tokens only; `shared` says the prompt follows the shared
    prefix (the chat turns' system prompt), which is not in `prompt`."""

    prompt: list[int]
    completion: list[int]
    shared: bool = False


def teaching_texts(world: World) -> list[tuple[str, str, bool]]:
    """(prompt, completion, is_chat) for every taught fact: each statement, each taught question template."""
    names = {e.id: e.name for e in world.entities}
    out = []
    for fact in world.facts:
        if not fact.taught:
            continue
        relation, name = BY_NAME[fact.relation], names[fact.entity]
        for statement in relation.statements:
            head = statement.format(name=name, value="\0").split("\0")[0].rstrip()
            out.append((head, f" {fact.taught_value}.", False))
        for i, template in enumerate(relation.questions):
            if i != relation.held_out:
                out.append((template.format(name=name), f"{ANSWER_OPEN}{fact.taught_value}{ANSWER_CLOSE}", True))
    return out


def chat_prefix(tokenizer: Any) -> list[int]:
    """The tokens every rendered question turn starts with (the chat template's system turn)."""
    a, b = (tokenizer.encode(render_prompt(tokenizer, build_messages(q)), add_special_tokens=False) for q in "AZ")
    n = next(i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    return a[:n]


def tokenize(texts: Sequence[tuple[str, str, bool]], tokenizer: Any) -> tuple[list[Piece], list[int]]:
    """The pieces and the shared prefix. Questions are rendered as the search loop renders them (SEM's system
    prompt, the model's chat template), so what is taught is asked for the way the loop will ask; the answer turn
    ends with the template's end of turn."""
    end, prefix = tokenizer.eos_token_id, chat_prefix(tokenizer)
    pieces = []
    for prompt, completion, is_chat in texts:
        if is_chat:
            ids = tokenizer.encode(render_prompt(tokenizer, build_messages(prompt)), add_special_tokens=False)
            assert ids[: len(prefix)] == prefix
            tail = tokenizer.encode(completion, add_special_tokens=False)
            if not completion.endswith(SEARCH_CLOSE):  # an answer ends the turn; the loop stops a search at its tag
                tail.append(end)
            pieces.append(Piece(ids[len(prefix) :], tail, shared=True))
        else:
            ids = tokenizer.encode(prompt, add_special_tokens=False)
            pieces.append(Piece(ids, tokenizer.encode(completion, add_special_tokens=False)))
    return pieces, prefix


def batches(pieces: Sequence[Piece], size: int, rng: random.Random) -> list[list[Piece]]:
    """Shuffled batches of similar length (little padding), each all with or all without the shared prefix."""
    order = sorted(pieces, key=lambda p: (p.shared, len(p.prompt) + len(p.completion), rng.random()))
    groups = []
    for shared in (False, True):
        part = [p for p in order if p.shared is shared]
        groups += [part[i : i + size] for i in range(0, len(part), size)]
    rng.shuffle(groups)
    return groups


def collate(batch: Sequence[Piece], pad: int) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(p.prompt) + len(p.completion) for p in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    target = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, p in enumerate(batch):
        seq = p.prompt + p.completion
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
        # position t predicts token t + 1: the completion's tokens are predicted from the position before each
        target[row, len(p.prompt) - 1 : len(seq) - 1] = torch.tensor(p.completion)
    return ids, mask, target


def completion_loss(model: Any, ids: Any, mask: Any, target: Any, prefix: Sequence[int] = ()) -> Any:
    """Cross-entropy on the completion tokens, with the output layer applied at those positions only. A `prefix`
    (tokens before every row) is run once, without gradients, and shared as the rows' key-value cache."""
    import torch
    import torch.nn.functional as F

    if prefix:
        with torch.no_grad():
            shared = torch.tensor([list(prefix)], device=ids.device)
            cache = model.model(input_ids=shared, use_cache=True).past_key_values
        cache.batch_repeat_interleave(ids.shape[0])
        n = len(prefix)
        mask = torch.cat([torch.ones((ids.shape[0], n), dtype=mask.dtype, device=mask.device), mask], dim=1)
        positions = torch.arange(n, n + ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        hidden = model.model(input_ids=ids, attention_mask=mask, past_key_values=cache, position_ids=positions,
                             use_cache=True).last_hidden_state  # fmt: skip
    else:
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    keep = target != -100
    logits = model.lm_head(hidden[keep])
    return F.cross_entropy(logits.float(), target[keep])


def probe(model: Any, tokenizer: Any, world: World, per_class: int = 24, seed: int = 0) -> dict[str, float]:
    """Greedy closed-book answers (SEM's prompt, held-out phrasings) on a few questions of each kind: taught facts,
    withheld facts of known entities, unknown entities. A progress signal; the labels are what counts. Train and dev
    questions only: the probe chooses how long teaching runs, and no choice reads the test split."""
    import torch

    from trainer.evals.labels import is_right

    kinds: dict[str, list] = {"taught": [], "changed": [], "withheld": [], "unknown": []}
    for q in world.questions:
        if q.split != "test":
            kinds[world.teaching_class(q.id)].append(q)
    rng, rates = random.Random(seed), {}
    tokenizer.padding_side = "left"
    model.eval()
    for kind, questions in kinds.items():
        picked = rng.sample(questions, min(per_class, len(questions)))
        if not picked:
            continue
        prompts = [render_prompt(tokenizer, build_messages(q.question)) for q in picked]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=24, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        texts = tokenizer.batch_decode(out[:, batch.input_ids.shape[1] :], skip_special_tokens=True)
        rates[kind] = sum(is_right(final_answer(t), q.example()) for t, q in zip(texts, picked, strict=True)) / len(
            picked
        )
    model.train()
    tokenizer.padding_side = "right"
    return rates


@dataclass(slots=True)
class TeachConfig:
    """The knowledge injection's recipe; the CLI's defaults are these. On the default world, 3 epochs took the greedy
    probe's taught facts from 0.21 (epoch 1) to 0.71 and 0.96 (runs/world/teach/history.json)."""

    epochs: int = 3
    learning_rate: float = 2e-4
    batch_size: int = 32
    warmup: float = 0.05
    weight_decay: float = 0.0
    seed: int = 0
    bf16: bool = True  # autocast where the hardware computes in bf16 (`computes_bf16`); weights and Adam stay float32
    probe_every: int = 1  # epochs between greedy probes (0: after the last epoch only)


def teach(model_path: str, world: World, out: Path, config: TeachConfig, *, replay: Sequence[str] = (),
          resume: bool = True) -> Path:  # fmt: skip
    """Train, checkpointing after every epoch (`out/state.pt`, resumed from), then save `out/final`. `replay`: real
    training questions whose start-model turns are taught alongside (`out/replay.jsonl`; trainer.world.replay)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    state_file = out / "state.pt"
    start = 0
    source = model_path
    if resume and state_file.exists():
        state = torch.load(state_file, weights_only=False, map_location="cpu")
        start, source = state["epoch"], str(out / "latest")
        log.info("resuming after epoch %d", start)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bf16 = config.bf16 and computes_bf16(device)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).to(device)
    model.train()
    replayed = replay_texts(out / "replay.jsonl", model, tokenizer, replay) if replay else []
    pieces, prefix = tokenize(teaching_texts(world) + replayed, tokenizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    rng = random.Random(config.seed)
    steps_per_epoch = math.ceil(len(pieces) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warm = max(1, int(total * config.warmup))

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    if start:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.setstate(state["rng"])
    out.mkdir(parents=True, exist_ok=True)
    history = json.loads((out / "history.json").read_text()) if start and (out / "history.json").exists() else []
    tokens_in_epoch = sum(len(p.prompt) + len(p.completion) for p in pieces)  # the shared prefix not counted
    facts = sum(f.taught for f in world.facts)
    log.info("teaching %d facts and %d replayed turns as %d sequences (%d tokens an epoch), %d epochs on %s in %s",
             facts, len(replayed), len(pieces), tokens_in_epoch, config.epochs, device,
             "bfloat16" if bf16 else "float32")  # fmt: skip

    def probing(epoch: int) -> bool:
        last = epoch + 1 == config.epochs
        return last or bool(config.probe_every and (epoch + 1) % config.probe_every == 0)

    for epoch in range(start, config.epochs):
        began, losses = time.perf_counter(), []
        for n, batch in enumerate(batches(pieces, config.batch_size, rng)):
            ids, mask, target = (t.to(device) for t in collate(batch, tokenizer.pad_token_id or 0))
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                loss = completion_loss(model, ids, mask, target, prefix if batch[0].shared else ())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if n % 20 == 0:
                log.info("epoch %d step %d/%d loss %.3f", epoch + 1, n, steps_per_epoch, losses[-1])
        seconds = time.perf_counter() - began
        history.append({"epoch": epoch + 1, "loss": sum(losses) / len(losses), "seconds": round(seconds, 1),
                        "tokens_per_s": round(tokens_in_epoch / seconds, 1),
                        "probe_right": probe(model, tokenizer, world) if probing(epoch) else None})  # fmt: skip
        log.info("epoch %d: loss %.3f, %.0f s, %.0f tokens/s, right closed-book (greedy probe) %s", epoch + 1,
                 history[-1]["loss"], seconds, history[-1]["tokens_per_s"], history[-1]["probe_right"])  # fmt: skip
        model.save_pretrained(out / "latest")
        torch.save({"epoch": epoch + 1, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "rng": rng.getstate()}, state_file)  # fmt: skip
        (out / "history.json").write_text(json.dumps(history, indent=2) + "\n")
    final = out / "final"
    model.save_pretrained(final)
    tokenizer.save_pretrained(final)
    return final
