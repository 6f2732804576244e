"""The engines' `top_logprobs` (what a decision_threshold reads): the model's own next-token distribution."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sem import protocol
from sem.engines.base import Engine, SamplingOptions
from sem.engines.hf import HFEngine


async def test_hf_top_logprobs_are_the_models_next_token_distribution(tokenizer) -> None:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)  # fmt: skip
    model = LlamaForCausalLM(config).float().eval()
    prompt = protocol.render_prompt(tokenizer, protocol.build_messages("Who wrote Hamlet?"))
    ids = tokenizer.encode(prompt + "<answer>Kyd</answer>", add_special_tokens=False)
    with torch.no_grad():
        expected = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1)
    engine = HFEngine(model, tokenizer, "tiny")
    assert isinstance(engine, Engine)  # the whole contract (abort, check_health, aclose), not generate alone
    deltas = [d async for d in engine.generate(ids, SamplingOptions(max_tokens=2, top_logprobs=5), request_id="t")]
    (delta,) = deltas
    assert delta.top_logprobs is not None and len(delta.top_logprobs) == len(delta.token_ids) == 2
    first = delta.top_logprobs[0]
    values, top = expected.topk(5)
    assert list(first) == top.tolist()
    assert list(first.values()) == pytest.approx(values.tolist(), abs=1e-5)
    assert delta.token_ids[0] == top[0].item()  # greedy took the most likely
    plain = [d async for d in engine.generate(ids, SamplingOptions(max_tokens=2), request_id="u")]
    assert plain[0].top_logprobs is None and plain[0].token_ids == delta.token_ids
