"""Teacher forcing with a model's HF weights: how likely it finds a continuation after a prefix (float32, no grad).

Both read-backs of the gate eval use it: multiple-choice options by likelihood (`trainer/evals/options.py`) and a
trained gate's P(search | first answer) (`trainer/evals/decision.py`); `trainer eval-gate` loads the weights once for
both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Scorer:
    model: Any
    tokenizer: Any

    @classmethod
    def load(cls, model_path: str) -> Scorer:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path)
        return cls(AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval(), tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def next_token_logprobs(self, prefix_ids: list[int]) -> Any:
        """Log-probabilities of every token right after the prefix (a vocabulary-sized tensor)."""
        import torch

        with torch.inference_mode():
            return torch.log_softmax(self.model(torch.tensor([prefix_ids])).logits[0, -1], dim=-1)

    def continuation_logprobs(self, prefix_ids: list[int], continuation: str) -> Any:
        """Per-token log-probabilities of the continuation's tokens after the prefix (empty if it has none)."""
        import torch

        ids = self.encode(continuation)
        if not ids:
            return torch.empty(0)
        with torch.inference_mode():
            logits = self.model(torch.tensor([prefix_ids + ids])).logits[0, len(prefix_ids) - 1 : -1]
            return torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(ids)[:, None])[:, 0]
