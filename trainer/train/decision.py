"""The gate's decision in the SFT loss: after its first answer, a trace either ends (known) or opens a search.

That is one token among the ~15 a teacher trace trains, so at equal weight the warm-up learns to read results long
before it learns when to search: on the fictional world, two passes left the token at the traces' marginal for known
and not-known questions alike (issue #28). `decision_weight` (SEMSFTConfig) counts it that many times: at 10 the
world's `auto` searches about half the time instead of never, but barely by knowledge (P(search) AUROC 0.61 on the
world's test split; docs/results.md says why). Importing this module imports TRL: `run_sft` does it lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from trl import SFTTrainer

from trainer.train.sft import IGNORE


def decision_mask(labels: torch.Tensor, close_ids: Sequence[int]) -> torch.Tensor:
    """True at each row's label right after its first `</answer>` (`close_ids`), where that label is trained: end of
    turn for a known question, the line that opens `<search>` for the others.

    >>> labels = torch.tensor([[-100, 5, 7, 8, 2, 7, 8], [-100, 7, 8, -100, 9, 9, 9], [-100, 5, 5, 5, 5, 5, 7]])
    >>> decision_mask(labels, [7, 8]).nonzero().tolist()  # row 1's decision is not trained, row 2 has no </answer>
    [[0, 4]]
    """
    k = len(close_ids)
    closes = (labels.unfold(1, k, 1) == torch.tensor(list(close_ids), device=labels.device)).all(-1)
    after_first = torch.where(closes.any(1), closes.int().argmax(1) + k, labels.shape[1])
    mask = torch.arange(labels.shape[1], device=labels.device)[None, :] == after_first[:, None]
    return mask & (labels != IGNORE)


def weighted_next_token_loss(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, count: Any = None
) -> torch.Tensor:
    """Sum of `weights` x next-token loss over trained labels, over `count` (the trained labels by default; a batch
    with none gives 0, not 0/0). Logits and labels are unshifted (position t predicts label t + 1).

    >>> logits, labels = torch.zeros(1, 3, 4), torch.tensor([[-100, 1, 2]])
    >>> round(weighted_next_token_loss(logits, labels, torch.ones(1, 2)).item(), 4)  # log 4: uniform over 4
    1.3863
    >>> round(weighted_next_token_loss(logits, labels, torch.tensor([[1.0, 3.0]])).item(), 4)  # (1 + 3) / 2 tokens
    2.7726
    """
    targets = labels[:, 1:]
    per_token = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
    count = (targets != IGNORE).sum() if count is None else count
    return (per_token * weights).sum() / torch.as_tensor(count).clamp(min=1)


class DecisionWeightedSFTTrainer(SFTTrainer):
    """TRL's SFTTrainer; with `args.decision_weight` != 1 its loss counts the decision token that many times (one
    forward with the full logits) and logs that token's own loss as `decision_loss`."""

    def __init__(self, *args: Any, close_ids: Sequence[int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.close_ids = list(close_ids)

    def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:  # fmt: skip
        weight = self.args.decision_weight
        if weight == 1:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs["labels"]
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False)
        decision = decision_mask(labels[:, 1:], self.close_ids).float()
        loss = weighted_next_token_loss(outputs.logits, labels, 1.0 + (weight - 1.0) * decision, num_items_in_batch)
        if decision.any():
            with torch.no_grad():
                own = weighted_next_token_loss(outputs.logits, labels, decision, decision.sum())
            self._metrics["train" if model.training else "eval"]["decision_loss"].append(own.item())
        return (loss, outputs) if return_outputs else loss
