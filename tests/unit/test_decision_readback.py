"""eval-gate's read-back of `auto`'s P(search): the decision the loop serves, for models with and without the note."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sem import protocol
from trainer.evals.decision import OPENERS, search_probabilities
from trainer.evals.likelihood import Scorer

QUESTION = "Which country is the town of Homa in now?"
TURN = "<answer>Culen</answer>" + protocol.format_confidence(0.62)


def scorer(tokenizer) -> Scorer:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)  # fmt: skip
    return Scorer(LlamaForCausalLM(config).float().eval(), tokenizer)


def prefix(tokenizer) -> list[int]:
    prompt = protocol.render_prompt(tokenizer, protocol.build_messages(QUESTION))
    return tokenizer.encode(prompt + TURN, add_special_tokens=False)


def test_after_the_note_the_read_back_is_one_minus_the_end_of_the_turn(tokenizer) -> None:
    """After a confidence note the loop searches on any token but the end of the turn, so that is what is read."""
    s = scorer(tokenizer)
    with torch.no_grad():
        logits = s.model(torch.tensor([prefix(tokenizer)])).logits[0, -1]
    expected = 1 - torch.softmax(logits.float(), -1)[tokenizer.eos_token_id].item()
    (read,) = search_probabilities(s, [(QUESTION, TURN)], note=True)
    assert read == pytest.approx(expected, rel=1e-4)


def test_without_the_note_the_read_back_sums_the_search_openers(tokenizer) -> None:
    s = scorer(tokenizer)
    ids = prefix(tokenizer)
    expected = 0.0
    for opener in OPENERS:
        tail = tokenizer.encode(opener, add_special_tokens=False)
        with torch.no_grad():
            logprobs = torch.log_softmax(s.model(torch.tensor([ids + tail])).logits[0].float(), -1)
        expected += math.exp(sum(logprobs[len(ids) - 1 + i, t].item() for i, t in enumerate(tail)))
    (read,) = search_probabilities(s, [(QUESTION, TURN)])
    assert read == pytest.approx(expected, rel=1e-4)
    # an untrained model spreads its mass: the openers' share is far below 1 - P(end of turn)
    assert read < search_probabilities(s, [(QUESTION, TURN)], note=True)[0]
