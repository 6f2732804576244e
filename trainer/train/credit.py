"""Credit for the search decision (issue #40): the loss of one GRPO step on the first turn and the decision after it.

After its first answer a SEM model takes one decision: end the turn or open a search. For a sampled first answer
both actions can be scored: stopping earns the reward of that answer alone (`r_stop`), searching the reward of the
answer it gives after reading (`r_search`, from the rollout itself when it searched, else from a branch that
searches). With both known, the decision needs no sampled return: the expected reward over the decision is
`p r_search + (1 - p) r_stop`, with `p` = P(not end of turn) at the decision, so its exact gradient is
`(r_search - r_stop) grad p` (`credit="two_action"`). `credit="plain"` is GRPO's: the sampled decision token takes
its rollout's group-normalised advantage like every other token. `credit="brier"` scores calibration instead
(RLCR-style): `(p - 1[stopping earns nothing])^2`, P(search) pulled to 1 after a first answer that is wrong and
to 0 after a right one, whatever the reading after a search would earn.

What is trained: the first turn's tokens (the answer) and the decision. The search call, the inserted result and
the answer after it are not in the loss (SFT taught reading; the decision is what this step is for), so they are
not in the forward either. The loss is computed on-policy (one optimizer step per batch of rollouts): the
importance ratio is `exp(logp - logp.detach())`, 1 in value with the gradient of `logp`, so no old-policy forward
is run; no reference model (beta 0).

Cheap by construction, equal in value and gradient to the plain computation (`plain_loss`, tested to 1e-5): the
rendered prompts' common prefix (the chat template's system turn) is run once per batch, with gradients, and
shared as every row's key-value cache; the output layer is applied only at the positions that are trained.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

Credit = Literal["two_action", "plain", "brier"]
CREDITS: tuple[str, ...] = ("two_action", "plain", "brier")


@dataclass(slots=True)
class Sample:
    """One rollout as the loss sees it: its prompt, its first turn, the decision after it and what each action
    earns. `decision` is None when the first turn has no closed answer (nothing to decide after)."""

    prompt: list[int]
    answer: list[int]  # the first turn's tokens, through its </answer>
    decision: int | None  # the sampled token after the first answer: end of turn, or the search call's first token
    reward: float  # what the rollout earned as it went
    r_stop: float = 0.0
    r_search: float = 0.0
    group: int = 0
    searched: bool = False  # the rollout searched (its reward is r_search); else r_search came from a branch
    answer_advantage: float = 0.0  # set by `advantages`
    decision_advantage: float = 0.0
    note: list[int] = field(default_factory=list)  # inserted between the answer and the decision (confidence_note)

    @property
    def row(self) -> list[int]:
        """The tokens the forward reads: prompt, answer, note, decision."""
        return self.prompt + self.answer + self.note + ([] if self.decision is None else [self.decision])

    def trained_positions(self) -> list[int]:
        """Positions in `row` whose logits predict a trained token: each answer token's, then the decision's."""
        first = len(self.prompt) - 1  # the position that predicts the first answer token
        picks = [first + j for j in range(len(self.answer))]
        if self.decision is not None:
            picks.append(len(self.prompt) + len(self.answer) + len(self.note) - 1)
        return picks


def group_advantages(values: Sequence[float], groups: Sequence[int], scale: bool = True) -> list[float]:
    """GRPO's advantage: each value minus its group's mean, over the group's standard deviation when `scale`.

    >>> group_advantages([1.0, 0.0, 2.0, 2.0], [0, 0, 1, 1])
    [1.0, -1.0, 0.0, 0.0]
    """
    by_group: dict[int, list[float]] = {}
    for v, g in zip(values, groups, strict=True):
        by_group.setdefault(g, []).append(v)
    stats = {g: (statistics.fmean(vs), statistics.pstdev(vs)) for g, vs in by_group.items()}
    out = []
    for v, g in zip(values, groups, strict=True):
        mean, std = stats[g]
        out.append((v - mean) / (std + 1e-4) if scale else v - mean)
    return [round(a, 6) for a in out]


def advantages(samples: Sequence[Sample], credit: Credit) -> None:
    """Fill each sample's advantages. Plain: the realised reward, group-normalised, on every trained token. With the
    decision credited apart, the answer's worth is what it earns under the better action (`max(r_stop, r_search)`),
    so that the sampled decision does not add its noise to the answer's credit."""
    groups = [s.group for s in samples]
    if credit == "plain":
        values = [s.reward for s in samples]
    else:
        values = [max(s.r_stop, s.r_search) if s.decision is not None else s.reward for s in samples]
    for s, a in zip(samples, group_advantages(values, groups), strict=True):
        s.answer_advantage = a
        s.decision_advantage = a if credit == "plain" else s.r_search - s.r_stop


def common_prefix(rows: Sequence[Sequence[int]]) -> int:
    """The length of the prefix all rows share (the rendered system turn).

    >>> common_prefix([[1, 2, 3], [1, 2, 4], [1, 2]])
    2
    """
    if not rows:
        return 0
    n = min(len(r) for r in rows)
    for i in range(n):
        if any(r[i] != rows[0][i] for r in rows):
            return i
    return n


def _terms(logprobs: Any, targets: Any, samples: Sequence[Sample], eos_id: int, credit: Credit, weight: float,
           miss_weight: float = 1.0) -> Any:  # fmt: skip
    """The summed loss terms of a batch from the log-softmax at every trained position, row by row in order: each
    sample's answer positions, then its decision position (when it has one). `miss_weight` (brier): a first answer
    that earns nothing counts that many times, which moves the greedy decision's cut on P(wrong) to 1/(1 + w)."""
    import torch

    token_logp = logprobs.gather(-1, targets[:, None]).squeeze(-1)
    ratio = torch.exp(token_logp - token_logp.detach())  # on-policy: 1 in value, grad logp in gradient
    # one vector op per kind of term, not one index per sample: each indexed element's backward fills a zero tensor
    # the size of its source (a decision's P(search) indexed alone cost a whole log-softmax's worth per sample)
    answer_advantage, decisions, decision_advantage, missed = [], [], [], []
    for s in samples:
        answer_advantage += [s.answer_advantage] * len(s.answer)
        if s.decision is not None:
            answer_advantage.append(0.0)
            decisions.append(len(answer_advantage) - 1)
            decision_advantage.append(s.decision_advantage)
            missed.append(float(s.r_stop <= 0))
    total = -(ratio.new_tensor(answer_advantage) * ratio).sum()
    if not decisions:
        return total
    at, advantage = torch.tensor(decisions, device=ratio.device), ratio.new_tensor(decision_advantage)
    if credit == "plain":
        return total - (advantage * ratio[at]).sum()
    p_search = 1 - torch.exp(logprobs[at, eos_id])
    if credit == "two_action":
        return total - weight * (advantage * p_search).sum()
    miss = ratio.new_tensor(missed)  # brier: P(search) against "the first answer earns nothing by itself"
    return total + weight * ((1 + (miss_weight - 1) * miss) * (p_search - miss) ** 2).sum()


def _trained_count(samples: Sequence[Sample]) -> int:
    return max(1, sum(len(s.answer) + (s.decision is not None) for s in samples))


def _targets(samples: Sequence[Sample]) -> list[int]:
    return [t for s in samples for t in (*s.answer, *(() if s.decision is None else (s.decision,)))]


def causal_lm(model: Any) -> Any:
    """The causal LM under a PEFT wrapper (its `model` is the decoder stack, `lm_head` the output layer)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def hidden_at(model: Any, rows: Sequence[Sequence[int]], picks: Sequence[tuple[int, int]], pad_id: int = 0,
              prompt_lengths: Sequence[int] | None = None) -> Any:  # fmt: skip
    """The last layer's states at `picks` ((row, position in the row)), cheaply: the rows' common prefix run once
    (with gradients, when enabled) and shared as a key-value cache, the rest right-padded after it.

    With `prompt_lengths` (each row's prompt), rows that share a whole prompt share it too: each distinct prompt's
    rest runs once after the common prefix, and its rows' own tails after that (a GRPO group's answers to one
    question: on the world's batches this halves the tokens a step runs)."""
    import torch

    lm = causal_lm(model)
    device = next(lm.parameters()).device
    shared = min(common_prefix(rows), min(p for _, p in picks))  # every picked position stays in the row's tail
    cache = None
    if shared:
        cache = lm.model(
            input_ids=torch.tensor([list(rows[0][:shared])], device=device), use_cache=True
        ).past_key_values
    seen = torch.ones((1, shared), dtype=torch.long, device=device)
    cuts = [shared] * len(rows)
    prompts: list[tuple[int, ...]] = []
    first = owner = None
    if prompt_lengths is not None and min(prompt_lengths) > shared:
        keys = [tuple(r[shared:n]) for r, n in zip(rows, prompt_lengths, strict=True)]
        prompts = list(dict.fromkeys(keys))
    if len(prompts) < len(rows) and prompts:  # some rows share a prompt: run each prompt once, then fan out
        if cache is not None:
            cache.batch_repeat_interleave(len(prompts))
        starts, seen = [shared] * len(prompts), seen.expand(len(prompts), -1)
        first, cache, seen = _tails(lm, [list(k) for k in prompts], starts, seen, cache, pad_id)
        index = {k: j for j, k in enumerate(prompts)}
        owner = torch.tensor([index[k] for k in keys], device=device)
        cache.reorder_cache(owner)
        seen, cuts = seen[owner], list(prompt_lengths)  # type: ignore[arg-type]
    else:
        if cache is not None:
            cache.batch_repeat_interleave(len(rows))
        seen = seen.expand(len(rows), -1)
    tails = [list(r[c:]) for r, c in zip(rows, cuts, strict=True)]
    own, _, _ = _tails(lm, tails, cuts, seen, cache, pad_id)
    # two advanced indexes, not one per pick (each indexed element's backward fills a zero tensor of its source's size)
    mine = [k for k, (i, p) in enumerate(picks) if p >= cuts[i]]
    theirs = [k for k, (i, p) in enumerate(picks) if p < cuts[i]]  # positions in a shared prompt: its own run's
    parts = [own[[picks[k][0] for k in mine], [picks[k][1] - cuts[picks[k][0]] for k in mine]]]
    if theirs:
        rows_of = [int(owner[picks[k][0]]) for k in theirs]  # type: ignore[index]
        parts.append(first[rows_of, [picks[k][1] - shared for k in theirs]])  # type: ignore[index]
    order = torch.tensor(mine + theirs, device=device).argsort()
    return torch.cat(parts)[order]


def _tails(lm: Any, tails: Sequence[Sequence[int]], starts: Sequence[int], seen: Any, cache: Any,
           pad_id: int) -> tuple[Any, Any, Any]:  # fmt: skip
    """Run right-padded `tails` after `cache` (one row each; `seen`: the cache's attention mask, `starts`: each
    tail's first position). Returns their states, the grown cache and its mask."""
    import torch

    device = seen.device
    width = max(1, max(len(t) for t in tails))
    ids = torch.full((len(tails), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(tails), width), dtype=torch.long, device=device)
    for i, tail in enumerate(tails):
        ids[i, : len(tail)] = torch.tensor(list(tail), dtype=torch.long, device=device)
        mask[i, : len(tail)] = 1
    positions = torch.tensor(list(starts), device=device)[:, None] + torch.arange(width, device=device)
    full = torch.cat([seen, mask], dim=1)
    out = lm.model(input_ids=ids, attention_mask=full, position_ids=positions, past_key_values=cache, use_cache=True)
    return out.last_hidden_state, out.past_key_values, full


def _rows_and_picks(samples: Sequence[Sample]) -> tuple[list[list[int]], list[tuple[int, int]]]:
    rows = [s.row for s in samples]
    picks = [(i, p) for i, s in enumerate(samples) for p in s.trained_positions()]
    return rows, picks


def step_loss(model: Any, samples: Sequence[Sample], eos_id: int, credit: Credit = "two_action",
              decision_weight: float = 1.0, pad_id: int = 0, miss_weight: float = 1.0) -> Any:  # fmt: skip
    """The batch's loss, cheaply (`hidden_at`): the output layer applied only at trained positions."""
    import torch

    rows, picks = _rows_and_picks(samples)
    hidden = hidden_at(model, rows, picks, pad_id, [len(s.prompt) for s in samples])
    logits = causal_lm(model).lm_head(hidden).float()
    targets = torch.tensor(_targets(samples), device=logits.device)
    terms = _terms(torch.log_softmax(logits, -1), targets, samples, eos_id, credit, decision_weight, miss_weight)
    return terms / _trained_count(samples)


def search_probabilities(model: Any, rows: Sequence[Sequence[int]], eos_id: int, pad_id: int = 0) -> list[float]:
    """P(not ending the turn) right after each row (a rendered prompt and its first answer): the decision's
    P(search), one batched forward without gradients."""
    import torch

    with torch.no_grad():
        hidden = hidden_at(model, rows, [(i, len(r) - 1) for i, r in enumerate(rows)], pad_id)
        logits = causal_lm(model).lm_head(hidden).float()
    return (1 - torch.softmax(logits, -1)[:, eos_id]).tolist()


def plain_loss(model: Any, samples: Sequence[Sample], eos_id: int, credit: Credit = "two_action",
               decision_weight: float = 1.0, miss_weight: float = 1.0) -> Any:  # fmt: skip
    """The same loss the straightforward way (each row on its own, whole prompt, full logits): the reference the
    cheap step is tested against."""
    import torch

    lm = causal_lm(model)
    device = next(lm.parameters()).device
    picked, targets = [], []
    for s in samples:
        logits = lm(input_ids=torch.tensor([s.row], device=device)).logits[0].float()
        picked.append(logits[s.trained_positions()])
    targets = torch.tensor(_targets(samples), device=device)
    logprobs = torch.log_softmax(torch.cat(picked), -1)
    terms = _terms(logprobs, targets, samples, eos_id, credit, decision_weight, miss_weight)
    return terms / _trained_count(samples)
